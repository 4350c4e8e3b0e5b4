"""Helpers to test a consumer service against real Kafka and Postgres.

- `ConsumerService` runs `python -m consumers.cli run MODULE:APP` as a real
  subprocess, to stop, kill, freeze and restart it as a crash test needs.
- `create_topic`, `produce`, `watermarks`, `committed_offsets`, `rewind_group`:
  the Kafka side.
- `ExactlyOnceCheck` says whether every record of a topic ran exactly once for a
  group. It reads only Kafka (the topic's offsets) and Postgres tables (the
  `workflows` rows and, optionally, a table of the handlers' own effects), never
  Onceflow's API, so a bug there cannot hide itself.

Nothing here imports pytest: failed checks raise AssertionError.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic  # not re-exported for mypy by confluent-kafka 2.16
from psycopg import sql

KeyValue = tuple[bytes | str | None, bytes | str | None]
Position = tuple[int, int]  # (partition, offset)


class ConsumerService:
    """A consumer service run as a subprocess: `python -m consumers.cli run APP`.

    Its output (stdout and stderr) is appended to `log_path` across restarts,
    so a failed test can show what the service said (`tail()`).

    Args:
        app: `MODULE:ATTRIBUTE` naming the KafkaApp.
        env: overrides of this process's environment (ONCEFLOW_DATABASE_URL,
            ONCEFLOW_KAFKA_BOOTSTRAP_SERVERS, ONCEFLOW_EXECUTOR_ID,
            ONCEFLOW_LEASE, ONCEFLOW_FAULT, ...); None removes a variable.
            Kept in `self.env`, which may be changed between starts.
        pythonpath: directories put first on PYTHONPATH, to import `app` from.
        args: arguments after `run APP` (for example `--stop-timeout 5`).
        log_path: where the output goes (default: a new temporary file).
    """

    def __init__(
        self,
        app: str,
        *,
        env: Mapping[str, str | None] | None = None,
        pythonpath: Sequence[str | Path] = (),
        args: Sequence[str] = (),
        log_path: str | Path | None = None,
    ) -> None:
        self.app = app
        self.env: dict[str, str | None] = dict(env or {})
        self.pythonpath = [str(p) for p in pythonpath]
        self.args = list(args)
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix="onceflow-service-", suffix=".log")
            os.close(fd)
        self.log_path = Path(log_path)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_start = 0

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit code (negative: killed by that signal); None while it runs."""
        return None if self._proc is None else self._proc.poll()

    def is_alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the service (an error if it already runs)."""
        if self.is_alive():
            raise RuntimeError(f"{self} is already running")
        env = dict(os.environ)
        for key, value in self.env.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        if self.pythonpath:
            rest = [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []
            env["PYTHONPATH"] = os.pathsep.join([*self.pythonpath, *rest])
        env["PYTHONUNBUFFERED"] = "1"
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(f"=== start: {self.app} {' '.join(self.args)}\n")
            log.flush()
            self._log_start = log.tell()
            cmd = [sys.executable, "-m", "consumers.cli", "run", self.app, *self.args]
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
            )

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (a graceful stop) and wait for the exit code; past `timeout`,
        SIGKILL and raise TimeoutError."""
        proc = self._started()
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a frozen process cannot handle SIGTERM
            proc.terminate()
        try:
            return self.wait(timeout)
        except TimeoutError:
            self.kill()
            raise

    def kill(self) -> int:
        """SIGKILL: a crash, no clean-up at all. Returns the exit code."""
        proc = self._started()
        if proc.poll() is None:
            proc.kill()
        return self.wait(30.0)

    def pause(self) -> None:
        """SIGSTOP: freeze the process, as if hung (no heartbeats, no polls)."""
        self._started().send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT: let a paused process go on."""
        self._started().send_signal(signal.SIGCONT)

    def restart(self, timeout: float = 30.0) -> None:
        """Stop gracefully (if running) and start again with `self.env` as it is now."""
        if self.is_alive():
            self.stop(timeout)
        self.start()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit; return its exit code."""
        try:
            return self._started().wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{self} still runs after {timeout}s\n{self.tail()}") from None

    def output(self, *, since_start: bool = True) -> str:
        """What the service wrote (by default since its latest start)."""
        try:
            with self.log_path.open(encoding="utf-8", errors="replace") as log:
                log.seek(self._log_start if since_start else 0)
                return log.read()
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 40) -> str:
        """The last lines of output, to put in an assertion message."""
        text = self.output(since_start=False).splitlines()[-lines:]
        body = "\n".join(f"    {line}" for line in text) or "    (no output)"
        return f"last lines of {self.log_path}:\n{body}"

    def wait_for_output(self, text: str, timeout: float = 30.0) -> None:
        """Wait until `text` appears in the output since the latest start.

        Raises:
            AssertionError: the service exited, or `timeout` passed, first.
        """
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if not self.is_alive():
                raise AssertionError(
                    f"{self} exited ({self.returncode}) before printing {text!r}\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"{self} did not print {text!r} in {timeout}s\n{self.tail()}")
            time.sleep(0.05)

    def close(self) -> None:
        """Kill the process if it still runs (paused or not)."""
        if self.is_alive():
            self.kill()

    def __enter__(self) -> ConsumerService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ConsumerService {self.app} pid={self.pid}>"

    def _started(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError(f"{self} was never started")
        return self._proc


# ----------------------------------------------------------------------- Kafka


def create_topic(bootstrap: str, topic: str, *, partitions: int = 1, timeout: float = 30.0) -> None:
    """Create `topic` and wait until every partition has a leader."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = NewTopic(topic, num_partitions=partitions, replication_factor=1)
    admin.create_topics([new], operation_timeout=timeout)[topic].result(timeout)
    deadline = time.monotonic() + timeout
    while True:
        found = admin.list_topics(topic=topic, timeout=timeout).topics.get(topic)
        leaders = (
            [] if found is None or found.error else [p.leader for p in found.partitions.values()]
        )
        if len(leaders) == partitions and min(leaders) >= 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {topic} has no leader for every partition in {timeout}s")
        time.sleep(0.1)


def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[KeyValue],
    *,
    partition: int | None = None,
    config: Mapping[str, Any] | None = None,
    timeout: float = 60.0,
) -> int:
    """Produce (key, value) records in order; return their number once all are
    acknowledged. Batches generously: 100,000 small records take seconds.

    Raises:
        KafkaException: a record was not delivered.
    """
    conf = {
        "bootstrap.servers": bootstrap,
        "linger.ms": 20,
        "batch.num.messages": 10000,
        "compression.type": "lz4",
        "enable.idempotence": True,  # a retried send is neither doubled nor reordered
        **(config or {}),
    }
    producer = Producer(conf)
    errors: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            errors.append(err)

    count = 0
    target = -1 if partition is None else partition  # -1: the partitioner picks
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key, target, on_delivery=delivered)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.05)
        count += 1
    if left := producer.flush(timeout):
        raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, f"{left} records not delivered"))
    if errors:
        raise KafkaException(errors[0])
    return count


def _with_consumer(bootstrap: str, group: str | None, topic: str) -> tuple[Consumer, list[int]]:
    found = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic=topic, timeout=10)
    meta = found.topics.get(topic)
    if meta is None or meta.error is not None:
        raise KafkaException(meta.error if meta else KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))
    group = group or f"onceflow-kit-{uuid.uuid4().hex}"
    conf = {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    return Consumer(conf), sorted(meta.partitions)


def watermarks(bootstrap: str, topic: str) -> dict[int, tuple[int, int]]:
    """(low, high) offsets of each partition: it holds the records low..high-1."""
    consumer, partitions = _with_consumer(bootstrap, None, topic)
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            for p in partitions
        }
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    """The group's committed offset of each partition (None: nothing committed)."""
    consumer, partitions = _with_consumer(bootstrap, group, topic)
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return {tp.partition: tp.offset if tp.offset >= 0 else None for tp in found}
    finally:
        consumer.close()


def rewind_group(bootstrap: str, group: str, topic: str, offset: int = 0) -> None:
    """Commit `offset` for every partition of `topic` under `group`, as an
    operator resetting offsets would. The group must have no live member."""
    consumer, partitions = _with_consumer(bootstrap, group, topic)
    try:
        offsets = [TopicPartition(topic, p, offset) for p in partitions]
        consumer.commit(offsets=offsets, asynchronous=False)
    finally:
        consumer.close()


# ---------------------------------------------------------- the exactly-once check


@dataclass(frozen=True)
class Effects:
    """A table the handlers write their effects to: one row per record.

    Attributes:
        table: its name, optionally schema-qualified (`public.effects`).
        id_column: holds the ID of the workflow that wrote the row.
        key_column, seq_column, order_column: to check per-key order: rows
            taken by `order_column` (say a bigserial) must have each key's
            `seq` increasing.
    """

    table: str
    id_column: str = "workflow_id"
    key_column: str | None = None
    seq_column: str | None = None
    order_column: str | None = None


@dataclass
class Report:
    """What `ExactlyOnceCheck` found; `summary()` puts it in words."""

    group: str
    topic: str
    offsets: dict[int, tuple[int, int]]  # partition -> (low, high) in Kafka
    expected: int | None
    workflows: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    missing: list[Position] = field(default_factory=list)
    duplicates: dict[Position, int] = field(default_factory=dict)
    pending: list[Position] = field(default_factory=list)
    not_success: dict[Position, str] = field(default_factory=dict)
    unknown: list[Position] = field(default_factory=list)  # rows for offsets Kafka lacks
    effects_missing: list[str] = field(default_factory=list)
    effects_duplicated: dict[str, int] = field(default_factory=dict)
    order_violations: list[str] = field(default_factory=list)

    @property
    def records(self) -> int:
        return sum(high - low for low, high in self.offsets.values())

    @property
    def complete(self) -> bool:
        """Every record has a workflow, and none is PENDING."""
        return not self.missing and not self.pending

    def problems(self, allow_errors: Iterable[Position] = ()) -> list[str]:
        """Each broken rule, in words (`allow_errors`: positions expected in ERROR)."""
        allowed = set(allow_errors)
        found: list[tuple[str, Sequence[object]]] = [
            ("records without a workflow", self.missing),
            ("records with several workflows", _items(self.duplicates)),
            ("workflows still PENDING", self.pending),
            ("workflows not SUCCESS", _items(self.not_success, skip=allowed)),
            ("expected ERROR workflows that are not", sorted(allowed - set(self.not_success))),
            ("workflows for offsets not in the topic", self.unknown),
            ("successful workflows without their effect", self.effects_missing),
            ("effects written more than once", _items(self.effects_duplicated)),
            ("per-key order violations", self.order_violations),
        ]
        out = [f"{len(items)} {what}: {_sample(items)}" for what, items in found if items]
        if self.expected is not None and self.records != self.expected:
            out.insert(0, f"the topic holds {self.records} records, {self.expected} expected")
        return out

    def summary(self, allow_errors: Iterable[Position] = ()) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.statuses.items())) or "none"
        head = (
            f"group {self.group!r}, topic {self.topic!r}: {self.records} records, "
            f"{self.workflows} workflows ({counts})"
        )
        return "\n".join([head, *(f"  - {p}" for p in self.problems(allow_errors))])


def _items(mapping: Mapping[Any, Any], skip: set[Any] | None = None) -> list[str]:
    return [f"{k}: {v}" for k, v in sorted(mapping.items()) if not skip or k not in skip]


def _sample(items: Sequence[object], limit: int = 8) -> str:
    shown = ", ".join(str(x) for x in items[:limit])
    return shown + (f", … ({len(items) - limit} more)" if len(items) > limit else "")


class ExactlyOnceCheck:
    """Whether every record of `topic` ran exactly once for `group`.

    For every offset Kafka holds there must be exactly one workflow row of the
    group, in SUCCESS; with `effects`, every successful workflow must have
    exactly one effect row, in per-key order when the order columns are given.

    Args:
        database_url: the database the consumer service records workflows in.
        bootstrap: the Kafka bootstrap address.
        expected: how many records the test produced (checked against Kafka).
        schema: Onceflow's schema (default "onceflow").
    """

    def __init__(
        self,
        database_url: str,
        bootstrap: str,
        *,
        topic: str,
        group: str,
        expected: int | None = None,
        effects: Effects | None = None,
        schema: str = "onceflow",
    ) -> None:
        self.database_url, self.bootstrap = database_url, bootstrap
        self.topic, self.group, self.expected = topic, group, expected
        self.effects, self.schema = effects, schema

    def report(self) -> Report:
        """Look now (Kafka first: a record produced meanwhile counts as missing)."""
        report = Report(
            self.group, self.topic, watermarks(self.bootstrap, self.topic), self.expected
        )
        with psycopg.connect(self.database_url, autocommit=True, connect_timeout=10) as conn:
            self._read_workflows(conn, report)
            if self.effects is not None:
                self._read_effects(conn, self.effects, report)
        return report

    def wait_until_complete(
        self, timeout: float = 60.0, *, services: Sequence[ConsumerService] = ()
    ) -> Report:
        """Poll until every record (at least `expected`) has a final workflow.

        Raises:
            AssertionError: `timeout` passed, or one of `services` died, first;
                the message holds the report and the services' output.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                report: Report | None = self.report()
                state = report.summary() if report else ""
            except (psycopg.OperationalError, psycopg.errors.UndefinedTable) as exc:
                # Postgres restarting, or tables the service creates not there yet.
                report, state = None, f"({type(exc).__name__}: {exc})"
            if report and report.complete and report.records >= (self.expected or 0):
                return report
            for service in services:
                if not service.is_alive():
                    raise AssertionError(
                        f"{service} exited ({service.returncode}) before the work was done: "
                        f"{state}\n{service.tail()}"
                    )
            if time.monotonic() > deadline:
                tails = "\n".join(s.tail() for s in services)
                raise AssertionError(f"not complete after {timeout}s: {state}\n{tails}")
            time.sleep(0.25)

    def assert_exactly_once(self, *, allow_errors: Iterable[Position] = ()) -> Report:
        """Raise AssertionError with a readable summary unless every record ran
        exactly once (`allow_errors`: (partition, offset) expected in ERROR)."""
        allowed = list(allow_errors)
        report = self.report()
        if report.problems(allowed):
            raise AssertionError("exactly-once violated: " + report.summary(allowed))
        return report

    def _read_workflows(self, conn: psycopg.Connection[Any], report: Report) -> None:
        query = sql.SQL(
            "SELECT source_partition, source_offset, array_agg(status) FROM {}.workflows"
            " WHERE source_group = %s AND source_topic = %s GROUP BY 1, 2 ORDER BY 1, 2"
        ).format(sql.Identifier(self.schema))
        seen: set[Position] = set()
        for partition, offset, statuses in conn.execute(query, (self.group, self.topic)):
            pos = (partition, offset)
            seen.add(pos)
            report.workflows += len(statuses)
            report.statuses.update(statuses)
            low, high = report.offsets.get(partition, (0, 0))
            if not low <= offset < high:
                report.unknown.append(pos)
            if len(statuses) > 1:
                report.duplicates[pos] = len(statuses)
            if "PENDING" in statuses:
                report.pending.append(pos)
            elif set(statuses) != {"SUCCESS"}:
                report.not_success[pos] = ",".join(sorted(set(statuses)))
        for partition, (low, high) in sorted(report.offsets.items()):
            report.missing += [
                (partition, o) for o in range(low, high) if (partition, o) not in seen
            ]

    def _read_effects(self, conn: psycopg.Connection[Any], fx: Effects, report: Report) -> None:
        table, ident = sql.Identifier(*fx.table.split(".")), sql.Identifier(fx.id_column)
        ours = sql.SQL(
            "SELECT workflow_id FROM {}.workflows WHERE source_group = %(g)s AND source_topic = %(t)s"
        ).format(sql.Identifier(self.schema))
        params = {"g": self.group, "t": self.topic}
        twice = sql.SQL(
            "SELECT {id}, count(*) FROM {table} WHERE {id} IN ({ours})"
            " GROUP BY {id} HAVING count(*) > 1"
        ).format(id=ident, table=table, ours=ours)
        report.effects_duplicated = {str(k): n for k, n in conn.execute(twice, params)}
        missing = sql.SQL(
            "{ours} AND status = 'SUCCESS' AND NOT EXISTS"
            " (SELECT FROM {table} WHERE {table}.{id} = workflows.workflow_id)"
            " ORDER BY source_partition, source_offset"
        ).format(id=ident, table=table, ours=ours)
        report.effects_missing = [str(r[0]) for r in conn.execute(missing, params)]
        if fx.key_column and fx.seq_column and fx.order_column:
            ordered = sql.SQL(
                "SELECT {key}, {seq} FROM {table} WHERE {id} IN ({ours}) ORDER BY {order}"
            ).format(
                key=sql.Identifier(fx.key_column),
                seq=sql.Identifier(fx.seq_column),
                order=sql.Identifier(fx.order_column),
                id=ident,
                table=table,
                ours=ours,
            )
            last: dict[Any, Any] = {}
            for key, seq in conn.execute(ordered, params):
                if key in last and seq <= last[key]:
                    report.order_violations.append(f"key {key!r}: {seq} after {last[key]}")
                else:
                    last[key] = seq
