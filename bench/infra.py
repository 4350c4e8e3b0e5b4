"""What the benchmark stands on: services, topics, producing, databases, processes.

Postgres and Kafka come from `consumers.testing._services` (environment
variables, testcontainers, or private native services, started once and
reused). Each run gets a database of its own, so that its tables and its
`pg_stat_database` commit counter hold that run and nothing else.
"""

from __future__ import annotations

import contextlib
import sys
import time
import uuid
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, LiteralString
from urllib.parse import urlsplit, urlunsplit

import psycopg
from confluent_kafka import (
    ConsumerGroupState,
    KafkaError,
    KafkaException,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic  # not re-exported for mypy by confluent-kafka 2.16
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench import workload

ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = Path.home() / ".cache" / "onceflow" / "bench"


@dataclass(frozen=True)
class Services:
    server_url: str  # a role allowed to CREATE DATABASE
    bootstrap: str


def services() -> Services:
    """Start (or reuse) Postgres and Kafka."""
    from consumers.testing import _services

    return Services(_services.postgres_url(), _services.kafka_bootstrap())


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def say(message: str) -> None:
    print(message, flush=True)


class Progress:
    """One line rewritten in place on a terminal, a line every few seconds otherwise."""

    def __init__(self, every: float = 5.0) -> None:
        self.tty = sys.stdout.isatty()
        self.every = every
        self._last = 0.0

    def show(self, line: str) -> None:
        if self.tty:
            sys.stdout.write(f"\r\x1b[K  {line}")
            sys.stdout.flush()
        elif time.monotonic() - self._last >= self.every:
            self._last = time.monotonic()
            print(f"  {line}", flush=True)

    def done(self) -> None:
        if self.tty:
            sys.stdout.write("\r\x1b[K")
            sys.stdout.flush()


# -- Postgres -------------------------------------------------------------------


def database_url(server_url: str, name: str) -> str:
    parts = urlsplit(server_url)
    if parts.scheme in ("postgres", "postgresql"):
        return urlunsplit(parts._replace(path=f"/{name}"))
    return make_conninfo(server_url, dbname=name)


@contextlib.contextmanager
def fresh_database(
    server_url: str, name: str, *, keep: bool = False, locale: str | None = None
) -> Iterator[str]:
    """A new database with the effects table; dropped afterwards unless `keep`.
    `locale` makes a collation the database's default, as a cluster initialised
    in a user's language has (the native one is "C"): a libc locale
    ("en_US.UTF-8") or, prefixed "icu:", an ICU one ("icu:en-US")."""
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if locale and locale.startswith("icu:"):
        create += sql.SQL(
            " TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C.UTF-8' LOCALE_PROVIDER icu ICU_LOCALE {}"
        ).format(sql.Literal(locale.removeprefix("icu:")))
    elif locale:
        create += sql.SQL(" TEMPLATE template0 ENCODING 'UTF8' LOCALE {}").format(
            sql.Literal(locale)
        )
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(create)
    url = database_url(server_url, name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(workload.create_effects_table())
        yield url
    finally:
        if not keep:
            with psycopg.connect(server_url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


@dataclass(frozen=True)
class Counters:
    commits: int  # pg_stat_database.xact_commit of the database
    rollbacks: int
    wal: int  # the server's WAL position in bytes (all databases: other load shows)

    def __sub__(self, other: Counters) -> Counters:
        return Counters(
            self.commits - other.commits, self.rollbacks - other.rollbacks, self.wal - other.wal
        )


def counters(server_url: str, name: str) -> Counters:
    """Commit counters of one database, once its sessions are gone, and the WAL position.

    A backend flushes its counters when it exits (and at most once a second
    while busy), so wait for the database's sessions to end first.
    """
    with psycopg.connect(server_url, autocommit=True) as conn:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [name]
            ).fetchone()
            if row is None or row[0] == 0:
                break
            time.sleep(0.1)
        time.sleep(0.2)
        row = conn.execute(
            "SELECT xact_commit, xact_rollback, pg_current_wal_lsn() - '0/0'::pg_lsn"
            " FROM pg_stat_database WHERE datname = %s",
            [name],
        ).fetchone()
    assert row is not None
    return Counters(int(row[0]), int(row[1]), int(row[2]))


COUNT_EFFECTS = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(workload.DEFAULT_TABLE))


class Poller:
    """Reads a run's database while it runs, counting its own transactions so
    that they can be taken out of the run's commit count."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = psycopg.connect(url, autocommit=True)
        self.statements = 0
        self.reconnects = 0  # Postgres went away meanwhile: the run's figures are suspect

    def one(self, query: LiteralString | sql.Composed, params: Any = None) -> Any:
        deadline = time.monotonic() + 60
        while True:
            try:
                self.statements += 1
                row = self.conn.execute(query, params).fetchone()
                return None if row is None else row[0]
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                self.reconnects += 1
                time.sleep(1.0)
                with contextlib.suppress(psycopg.OperationalError):
                    self.conn.close()
                    self.conn = psycopg.connect(self.url, autocommit=True)

    def effects(self) -> int:
        return int(self.one(COUNT_EFFECTS))

    def pending(self) -> int:
        return int(self.one("SELECT count(*) FROM onceflow.workflows WHERE status = 'PENDING'"))

    def close(self) -> None:
        self.conn.close()


# -- Kafka ----------------------------------------------------------------------


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})


def create_topic(
    bootstrap: str, topic: str, partitions: int, config: dict[str, str] | None = None
) -> None:
    client = admin(bootstrap)
    new = NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config or {})
    client.create_topics([new])[topic].result(30)
    deadline = time.monotonic() + 60
    while True:
        try:
            desc = client.describe_topics(TopicCollection([topic]))[topic].result(30)
            if len(desc.partitions) == partitions and all(
                p.leader is not None for p in desc.partitions
            ):
                return
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise
        if time.monotonic() > deadline:
            raise RuntimeError(f"topic {topic} has no leaders after 60s")
        time.sleep(0.2)


def topic_id(bootstrap: str, topic: str) -> str:
    """The topic's ID (its incarnation), part of every Onceflow workflow ID."""
    client = admin(bootstrap)  # kept alive until the answer is in
    desc = client.describe_topics(TopicCollection([topic]))[topic].result(30)
    return str(desc.topic_id)


def delete_topics(bootstrap: str, topics: list[str]) -> None:
    if not topics:
        return
    client = admin(bootstrap)  # kept alive until the answers are in
    for fut in client.delete_topics(topics, operation_timeout=30).values():
        with contextlib.suppress(KafkaException):
            fut.result(60)


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """High watermark of each partition (records start at offset 0 in a fresh topic)."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("ofbench-probe-")})
    deadline = time.monotonic() + 60
    try:
        ends: dict[int, int] = {}
        for p in range(partitions):
            while p not in ends:
                try:
                    tp = TopicPartition(topic, p)
                    ends[p] = consumer.get_watermark_offsets(tp, timeout=10, cached=False)[1]
                except KafkaException:  # a new topic's leader is not yet known everywhere
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        return ends
    finally:
        consumer.close()


def wait_group_stable(
    bootstrap: str, group: str, members: int, partitions: int, timeout: float = 60.0
) -> None:
    """Until `members` consumers share all `partitions` of the group's topic."""
    client = admin(bootstrap)
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(KafkaException):
            desc = client.describe_consumer_groups([group])[group].result(10)
            assigned = sum(len(m.assignment.topic_partitions) for m in desc.members)
            if (
                desc.state == ConsumerGroupState.STABLE
                and len(desc.members) == members
                and assigned == partitions
            ):
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"group {group} not stable with {members} members in {timeout}s")
        time.sleep(0.25)


def _producer(bootstrap: str, *, linger_ms: int) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": linger_ms,
            "batch.size": 1_000_000,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
        }
    )


def produce(
    bootstrap: str, topic: str, count: int, *, start: int = 0, label: str = "produce"
) -> float:
    """Produce records `start` .. `start+count-1` as fast as the client goes; seconds taken."""
    producer = _producer(bootstrap, linger_ms=20)
    progress = Progress(every=5.0)
    began = time.monotonic()
    for i in range(start, start + count):
        value, key = workload.record_value(i), workload.key_of(i).encode()
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 20_000 == 0 and i > start:
            producer.poll(0)
            done = i - start
            rate = done / max(1e-9, time.monotonic() - began)
            progress.show(f"{label}: {done:,}/{count:,} records ({rate:,.0f}/s)")
    left = producer.flush(120)
    progress.done()
    if left:
        raise RuntimeError(f"{left} records not delivered to {topic}")
    return time.monotonic() - began


def produce_at_rate(
    bootstrap: str,
    topic: str,
    rate: float,
    seconds: float,
    *,
    start: int = 0,
    on_tick: Callable[[int], None] | None = None,
    stamps: array[float] | None = None,
) -> int:
    """Produce `rate` records a second for `seconds`, evenly (every millisecond
    what is due), records numbered from `start`; returns how many were sent.
    `stamps`, when given, gets each record's wall clock (ms) just before its
    `produce()`, in order: the produce time when the topic's timestamps are
    the broker's (LogAppendTime).

    The producer lingers 5 ms, librdkafka's default: with 1 ms, its thousand
    small produce requests a second made the broker the machine's largest
    user of CPU at 4,000 records/s (89% busy against 65-69%). The linger
    counts against the latency measured: CreateTime is set at `produce()`."""
    producer = _producer(bootstrap, linger_ms=5)
    began = time.monotonic()
    sent = 0
    while True:
        elapsed = time.monotonic() - began
        if elapsed >= seconds:
            break
        due = min(int(elapsed * rate) + 1, int(seconds * rate))
        while sent < due:
            i = start + sent
            value, key = workload.record_value(i), workload.key_of(i).encode()
            at = time.time() * 1000.0
            try:
                producer.produce(topic, value, key)
            except BufferError:
                producer.poll(0.01)
                continue
            if stamps is not None:
                stamps.append(at)
            sent += 1
        producer.poll(0)
        if on_tick is not None:
            on_tick(sent)
        time.sleep(0.001)
    if producer.flush(60):
        raise RuntimeError(f"records not delivered to {topic}")
    return sent
