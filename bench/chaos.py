"""Chaos run: exactly-once under real faults, judged by an independent checker.

    python -m bench.chaos [--records 100000] [--faults 25] [--kinds kill,zombie,...]

In the manner of Jepsen's fault runs and Kafka's own exactly-once system
tests: real processes, real kills, and a checker that trusts nothing the
system says about itself.

- A fresh topic (6 partitions) and a producer thread writing keyed records
  (a few hundred keys) at a steady rate, so faults hit live traffic. Each
  record carries its event ID and its sequence number within its key.
- Three consumer services (`onceflow run bench.chaos_app:app`) in one group,
  as subprocesses; their handler runs two plain steps and a transaction step.
- Faults at random times, one at a time, each logged with its time:
  `kill` (SIGKILL a service, restart it), `zombie` (SIGSTOP a service past its
  lease and Kafka session, every other time at a moment it holds an effect not
  yet committed, then SIGCONT: it must find itself fenced),
  `pg_restart` and `kafka_restart` (the native test services, down for a
  moment), `storm` (services joining the group and leaving it quickly).
- When production and faults are over, the run waits for the backlog to drain,
  stops the services and checks: every Kafka record (read back from the topic)
  has one SUCCESS workflow, completed once (a trigger on the workflows table
  logs every completion), and one effect row matching it; each key's effects
  committed in the key's order. Plain-step re-runs are allowed and counted.

Exit status 1 on any missing record, duplicate completion, duplicate effect or
order violation; the last line is one summary of figures. `run_chaos` is the
machinery, shared with tests/integration/chaos.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import engine
from consumers.testing import ConsumerService, create_topic, watermarks
from consumers.testing._services import (
    ENV_SERVICES_DIR,
    NativeKafka,
    NativePostgres,
    ServiceUnavailable,
    default_state_dir,
    kafka_bootstrap,
    postgres_url,
)

ROOT = Path(__file__).resolve().parent.parent
CHAOS_SERVICES_DIR = Path.home() / ".cache" / "onceflow" / "chaos-services"
APP = "bench.chaos_app:app"
KINDS = ("kill", "zombie", "pg_restart", "kafka_restart", "storm")
Position = tuple[int, int]  # (partition, offset)
Say = Callable[[str], None]


class ChaosError(RuntimeError):
    """The run could not be set up as asked; the message says what to change."""


@dataclass(frozen=True)
class ChaosConfig:
    """What to run. Times in seconds; `rate` in records a second."""

    records: int = 100_000
    partitions: int = 6
    keys: int = 300
    services: int = 3
    faults: int = 25
    kinds: tuple[str, ...] = KINDS
    rate: float = 300.0
    seed: int | None = None
    # Short lease: a zombie's work is taken over within the run.
    lease: float = 3.0
    heartbeat: float = 0.5
    # Kafka moves a frozen member's partitions after this; a zombie outlasts
    # it too, or its partitions (and so its queued work) would wait for it.
    session_timeout: float = 6.0
    # Kafka commits stored offsets this often (librdkafka's default is 5 s):
    # the shorter, the more running workflows a new owner finds in Postgres only.
    commit_interval: float = 1.0
    drain_timeout: float = 600.0
    work_seconds: float = 0.0  # how long the handler's `work` step takes
    log_dir: Path | None = None
    keep: bool = False


@dataclass(frozen=True)
class Fault:
    at: float  # seconds since production started
    kind: str
    target: str
    took: float

    def line(self) -> str:
        return f"{self.at:7.1f}s  {self.kind:<13} {self.target} (took {self.took:.1f}s)"


@dataclass
class Findings:
    """What the checker found, from the topic and Postgres tables alone."""

    produced: int = 0  # records the topic holds
    success: int = 0  # records with a SUCCESS workflow
    missing: dict[Position, str] = field(default_factory=dict)  # record -> why
    dup_completions: int = 0
    dup_effects: int = 0
    order_violations: int = 0
    plain_reruns: int = 0
    moved: int = 0  # workflows whose plain steps ran in more than one executor
    notes: list[str] = field(default_factory=list)  # other violations, in words

    def problems(self) -> list[str]:
        out = list(self.notes)
        if self.missing:
            why = Counter(self.missing.values())
            sample = ", ".join(f"{p}-{o}" for p, o in sorted(self.missing)[:8])
            out.append(f"{len(self.missing)} records missing ({dict(why)}), e.g. {sample}")
        for count, what in (
            (self.dup_completions, "duplicate completions"),
            (self.dup_effects, "duplicate transaction effects"),
            (self.order_violations, "per-key order violations"),
        ):
            if count:
                out.append(f"{count} {what}")
        return out


@dataclass
class ChaosResult:
    config: ChaosConfig
    seed: int
    findings: Findings
    faults: list[Fault]
    acked: int  # records the producer had acknowledged
    drain_after_last_fault: float | None  # None: it did not drain
    elapsed: float
    unexpected_exits: list[str]
    database_url: str  # kept when the run fails, or with `keep`
    topic: str
    group: str
    log_dir: Path
    errors: list[str] = field(default_factory=list)  # the run's own failures

    def problems(self) -> list[str]:
        out = list(self.errors) + self.findings.problems()
        if self.acked != self.config.records:
            out.append(f"the producer had {self.acked} of {self.config.records} records acked")
        elif self.findings.produced != self.acked:
            out.append(f"the topic holds {self.findings.produced} records, {self.acked} acked")
        if self.drain_after_last_fault is None:
            out.append(f"the work did not drain within {self.config.drain_timeout:.0f}s")
        return out

    @property
    def ok(self) -> bool:
        return not self.problems()

    def summary(self) -> str:
        f = self.findings
        kinds = Counter(x.kind for x in self.faults)
        mix = " ".join(f"{k}={kinds[k]}" for k in KINDS if k in self.config.kinds)
        drain = (
            "never"
            if self.drain_after_last_fault is None
            else f"{self.drain_after_last_fault:.1f}s"
        )
        return (
            f"chaos: produced={f.produced} success={f.success} missing={len(f.missing)} "
            f"dup_completions={f.dup_completions} dup_effects={f.dup_effects} "
            f"order_violations={f.order_violations} plain_reruns={f.plain_reruns} moved={f.moved} "
            f"faults={len(self.faults)} ({mix}) unexpected_exits={len(self.unexpected_exits)} "
            f"drain_after_last_fault={drain} elapsed={self.elapsed:.1f}s"
        )


# ------------------------------------------------------------------ the tables

_TABLES = """
-- id: the order each key's effects were written in (one at a time per key);
-- prev_seq: the key's highest seq already committed when this one was written.
CREATE TABLE public.chaos_effects (
    id bigserial PRIMARY KEY, workflow_id text NOT NULL, event_id bigint NOT NULL,
    key text NOT NULL, seq integer NOT NULL, prev_seq integer, partition integer NOT NULL,
    "offset" bigint NOT NULL, executor text NOT NULL,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE INDEX ON public.chaos_effects (key, seq);
CREATE TABLE public.chaos_step_runs (
    id bigserial PRIMARY KEY, run_key text NOT NULL, step text NOT NULL,
    workflow_id text NOT NULL, executor text NOT NULL,
    ran_at timestamptz NOT NULL DEFAULT clock_timestamp());
-- Every write that leaves a workflow SUCCESS, logged by Postgres itself, in the
-- same transaction: a workflow completed twice shows as two rows.
CREATE TABLE public.chaos_completions (
    id bigserial PRIMARY KEY, workflow_id text NOT NULL, from_status text,
    epoch bigint NOT NULL, owner text, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE FUNCTION public.chaos_log_completion() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.chaos_completions (workflow_id, from_status, epoch, owner)
    VALUES (NEW.workflow_id, CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END, NEW.epoch, NEW.owner);
    RETURN NULL;
END $$;
CREATE TRIGGER chaos_completion AFTER INSERT OR UPDATE OF status ON onceflow.workflows
    FOR EACH ROW WHEN (NEW.status = 'SUCCESS') EXECUTE FUNCTION public.chaos_log_completion();
"""


def create_database(server_url: str, name: str) -> str:
    """Create and migrate database `name` with the chaos tables; return its URL."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(server_url, dbname=name)
    engine.migrate_database(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_TABLES)
    return url


def discard(result: ChaosResult, *, server_url: str, bootstrap: str) -> None:
    """Drop a run's database and delete its topic."""
    name = str(conninfo_to_dict(result.database_url)["dbname"])
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics([result.topic], operation_timeout=30).values():
        future.result(60)


# ------------------------------------------------------------------ the checker


def read_topic(bootstrap: str, topic: str) -> dict[Position, dict[str, Any]]:
    """Every record of `topic`, by position: its decoded value (`id`, `key`, `seq`)."""
    ends = watermarks(bootstrap, topic)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"chaos-check-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    out: dict[Position, dict[str, Any]] = {}
    try:
        todo = {p for p, (low, high) in ends.items() if high > low}
        consumer.assign([TopicPartition(topic, p, ends[p][0]) for p in todo])
        deadline = time.monotonic() + 120
        while todo:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} back within 120s")
            for msg in consumer.consume(10_000, timeout=1.0):
                err = msg.error()
                partition, offset = msg.partition(), msg.offset()
                assert partition is not None and offset is not None
                if err is not None and err.code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(f"reading {topic} back: {err}")
                if err is None:
                    out[(partition, offset)] = json.loads(msg.value() or b"null")
                if offset + (0 if err else 1) >= ends[partition][1]:
                    todo.discard(partition)
    finally:
        consumer.close()
    return out


def check(database_url: str, bootstrap: str, topic: str, group: str) -> Findings:
    """Judge the run from the topic and Postgres tables, not Onceflow's API.

    Every record the topic holds must have exactly one workflow, SUCCESS,
    completed once (per the completion trigger), with exactly one effect row
    carrying the record's own event ID, key and seq; each key's effects must
    have committed in increasing seq. Plain-step re-runs are only counted.
    """
    records = read_topic(bootstrap, topic)
    found = Findings(produced=len(records))
    ids = Counter(value["id"] for value in records.values())
    if set(ids) != set(range(len(records))):
        # The producer's side (it is idempotent): would also look like disorder below.
        twice = sorted(i for i, n in ids.items() if n > 1)[:8]
        found.notes.append(
            f"the topic's event IDs are not 0..{len(records) - 1} once each: {twice}"
        )
    with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
        workflows = conn.execute(
            "SELECT source_partition, source_offset, workflow_id, status FROM onceflow.workflows"
            " WHERE source_group = %s AND source_topic = %s",
            (group, topic),
        ).fetchall()
        completions: dict[str, int] = dict(
            conn.execute(
                "SELECT workflow_id, count(*) FROM public.chaos_completions GROUP BY workflow_id"
            ).fetchall()
        )
        effects = conn.execute(
            "SELECT workflow_id, event_id, key, seq, prev_seq FROM public.chaos_effects ORDER BY id"
        ).fetchall()
        reruns = conn.execute(
            "SELECT count(*) - count(DISTINCT run_key) FROM public.chaos_step_runs"
        ).fetchone()
        # Evidence that faults bit: workflows whose steps ran in several executors.
        moved = conn.execute(
            "SELECT count(*) FROM (SELECT workflow_id FROM public.chaos_step_runs"
            " GROUP BY workflow_id HAVING count(DISTINCT executor) > 1) AS m"
        ).fetchone()
    found.plain_reruns = int(reruns[0]) if reruns else 0
    found.moved = int(moved[0]) if moved else 0

    by_pos: defaultdict[Position, list[tuple[str, str]]] = defaultdict(list)
    for partition, offset, wid, status in workflows:
        by_pos[(partition, offset)].append((wid, status))
    ours = {wid for rows in by_pos.values() for wid, _ in rows}
    strays = sorted(set(by_pos) - set(records))
    if strays:
        found.notes.append(f"{len(strays)} workflows for offsets the topic lacks: {strays[:8]}")

    effects_of: defaultdict[str, list[tuple[int, str, int]]] = defaultdict(list)
    for wid, event_id, key, seq, _prev in effects:
        effects_of[wid].append((event_id, key, seq))
    found.dup_effects = sum(len(rows) - 1 for rows in effects_of.values())
    unowned = set(effects_of) - ours
    if unowned:
        found.notes.append(f"{len(unowned)} effects of unknown workflows: {sorted(unowned)[:4]}")

    mismatched: list[str] = []
    unlogged: list[str] = []
    for pos, value in records.items():
        rows = by_pos.get(pos, [])
        succeeded = [wid for wid, status in rows if status == "SUCCESS"]
        # One record, one completion: a second workflow, or a second write
        # into SUCCESS (the trigger's log), is a duplicate completion.
        found.dup_completions += max(0, len(succeeded) - 1)
        found.dup_completions += sum(max(0, completions.get(wid, 0) - 1) for wid in succeeded)
        if not succeeded:
            statuses = sorted({status for _, status in rows})
            found.missing[pos] = "/".join(statuses) if statuses else "no workflow"
            continue
        found.success += 1
        wid = succeeded[0]
        if completions.get(wid, 0) == 0:
            unlogged.append(wid)
        written = effects_of.get(wid)
        if not written:
            found.missing[pos] = "no effect"
        elif written[0] != (value["id"], value["key"], value["seq"]):
            mismatched.append(f"{pos}: record {value}, effect {written[0]}")
    if unlogged:
        found.notes.append(f"{len(unlogged)} SUCCESS workflows with no logged completion")
    if mismatched:
        found.notes.append(f"{len(mismatched)} effects unlike their record: {mismatched[:4]}")

    # Per-key order. Records of a key share a partition, in seq order 0, 1, 2...
    # Each effect (the first of its workflow) must come after the key's
    # earlier ones in write order, and must have seen exactly its predecessor
    # (seq - 1) committed: a record run before its predecessor had finished
    # is caught even when the bigserial happens to come out in order.
    last: dict[str, int] = {}
    seen: set[str] = set()
    for wid, _event_id, key, seq, prev in effects:
        if wid in seen:
            continue  # a duplicate: counted above, not again as disorder
        seen.add(wid)
        if (key in last and seq <= last[key]) or prev != (seq - 1 if seq else None):
            found.order_violations += 1
        last[key] = max(seq, last.get(key, seq))
    return found


def drained(database_url: str, bootstrap: str, topic: str, group: str) -> bool:
    """Whether every record the topic holds has a workflow, and none is PENDING."""
    total = sum(high - low for low, high in watermarks(bootstrap, topic).values())
    with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT (source_partition, source_offset)),"
            " count(*) FILTER (WHERE status = 'PENDING') FROM onceflow.workflows"
            " WHERE source_group = %s AND source_topic = %s",
            (group, topic),
        ).fetchone()
    return row is not None and row[0] >= total and row[1] == 0


# ------------------------------------------------------------------ the producer


class Feeder(threading.Thread):
    """Produces `records` keyed records at `rate` a second, then flushes."""

    def __init__(self, bootstrap: str, topic: str, config: ChaosConfig, seed: int) -> None:
        super().__init__(name="chaos-feeder", daemon=True)
        self.bootstrap, self.topic, self.config, self.seed = bootstrap, topic, config, seed
        self.sent = 0
        self.acked = 0
        self.errors: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "enable.idempotence": True,  # retries neither double nor reorder a key
                "linger.ms": 5,
                "message.timeout.ms": 600_000,  # outlast any broker restart
                "log_level": 0,  # a broker restart makes librdkafka chatty
            }
        )

        def delivered(err: KafkaError | None, _msg: Any) -> None:
            if err is None:
                self.acked += 1
            else:
                self.errors.append(str(err))

        rng = random.Random(self.seed)
        seqs = [0] * self.config.keys
        start = time.monotonic()
        try:
            while self.sent < self.config.records and not self.stopping.is_set():
                due = min(self.config.records, int((time.monotonic() - start) * self.config.rate))
                while self.sent < due:
                    k = rng.randrange(self.config.keys)
                    key = f"k{k}"
                    value = json.dumps({"id": self.sent, "key": key, "seq": seqs[k]}).encode()
                    while True:
                        try:
                            producer.produce(self.topic, value, key.encode(), on_delivery=delivered)
                            break
                        except BufferError:  # the local queue is full: the broker is away
                            if self.stopping.is_set():
                                return
                            producer.poll(0.1)
                    seqs[k] += 1
                    self.sent += 1
                producer.poll(0.02)
        finally:
            left = producer.flush(600)
            if left:
                self.errors.append(f"{left} records never delivered")


# ------------------------------------------------------------------ the services


class Member:
    """One consumer service of the group, restartable under a new executor ID."""

    def __init__(self, name: str, env: dict[str, str | None], log_dir: Path) -> None:
        self.name = name
        self.generation = 0
        self.service = ConsumerService(
            APP,
            env={**env, "ONCEFLOW_EXECUTOR_ID": self.executor_id},
            pythonpath=[ROOT],
            args=["--stop-timeout", "5", "--progress-every", "5"],
            log_path=log_dir / f"{name}.log",
        )
        self.expected_down = False

    @property
    def executor_id(self) -> str:
        return f"chaos-{self.name}-g{self.generation}"

    def new_identity(self) -> None:
        self.generation += 1
        self.service.env["ONCEFLOW_EXECUTOR_ID"] = self.executor_id


class Chaos:
    """The services of a run, and the faults done to them."""

    def __init__(
        self,
        config: ChaosConfig,
        env: dict[str, str | None],
        log_dir: Path,
        rng: random.Random,
        say: Say,
        natives: tuple[NativePostgres, NativeKafka] | None,
    ) -> None:
        self.config, self.env, self.log_dir, self.rng, self.say = config, env, log_dir, rng, say
        self.natives = natives
        self.members = [Member(f"s{i}", env, log_dir) for i in range(config.services)]
        self.extras: list[ConsumerService] = []
        self.unexpected_exits: list[str] = []
        self.faults: list[Fault] = []
        self.zombies = 0

    def start(self) -> None:
        for m in self.members:
            m.service.start()
        for m in self.members:
            m.service.wait_for_output("assigned", timeout=90)

    def supervise(self, elapsed: float) -> None:
        """Restart a member that exited by itself (a bug worth reporting, not a fault)."""
        for m in self.members:
            if not m.expected_down and not m.service.is_alive():
                code = m.service.returncode
                line = f"{elapsed:7.1f}s  {m.name} exited by itself (code {code}); restarted"
                self.unexpected_exits.append(f"{line}\n{m.service.tail(15)}")
                self.say(f"chaos: {line} (log {m.service.log_path})")
                m.service.start()

    def inject(self, kind: str, t0: float) -> Fault:
        start = time.monotonic()
        target = getattr(self, f"_{kind}")()
        fault = Fault(start - t0, kind, target, time.monotonic() - start)
        self.faults.append(fault)
        self.say(f"chaos: fault {len(self.faults):>2} {fault.line()}")
        return fault

    def _pick(self) -> Member:
        alive = [m for m in self.members if m.service.is_alive()]
        return self.rng.choice(alive or self.members)

    def _kill(self) -> str:
        m = self._pick()
        pid = m.service.pid
        m.expected_down = True
        m.service.kill()
        down = self.rng.uniform(0.0, 2.0)
        time.sleep(down)
        same = self.rng.random() < 0.5
        if not same:
            m.new_identity()  # its old work is taken over after the lease
        m.service.start()  # same ID: it hands its old work back at launch
        m.expected_down = False
        how = "same executor ID" if same else f"new executor ID {m.executor_id}"
        return f"{m.name} pid {pid}, down {down:.1f}s, restarted with {how}"

    def _zombie(self) -> str:
        m = self._pick()
        # Frozen past the lease (its work may be claimed) and past the Kafka
        # session (its partitions go to others, who claim that work): when it
        # thaws, its runs must find themselves fenced. Every other zombie (the
        # first one included) is aimed at a moment its checkpoint batch holds
        # an effect not yet committed: the hardest case for the executors
        # taking over its work, and for the order of that key's effects.
        # A few seconds more than both, so that the takeover has time to run
        # later records before the zombie wakes.
        floor = max(self.config.lease, self.config.session_timeout) + 3.0
        frozen = self.rng.uniform(floor, floor + 4.0)
        self.zombies += 1
        inside = self.zombies % 2 == 1 and self._freeze_inside_transaction(m.service)
        if not inside:
            m.service.pause()
        try:
            time.sleep(frozen)
        finally:
            m.service.resume()
        where = " holding an uncommitted effect" if inside else ""
        return f"{m.name} pid {m.service.pid}, frozen {frozen:.1f}s{where}"

    def _freeze_inside_transaction(self, svc: ConsumerService, budget: float = 10.0) -> bool:
        """SIGSTOP `svc` at a moment one of its Postgres sessions is inside a
        transaction holding an uncommitted effect; False (and running) if none
        came within `budget`. Each miss freezes it for some milliseconds only."""
        url = str(self.env["ONCEFLOW_DATABASE_URL"])
        port = int(conninfo_to_dict(url)["port"] or 5432)
        deadline = time.monotonic() + budget
        with psycopg.connect(url, autocommit=True) as conn:
            while time.monotonic() < deadline and svc.pid is not None:
                proc = psutil.Process(svc.pid)
                listing = getattr(proc, "net_connections", None) or proc.connections
                ports = [
                    c.laddr.port for c in listing(kind="tcp") if c.raddr and c.raddr.port == port
                ]
                svc.pause()
                time.sleep(0.05)  # let its sessions finish the statement in hand
                row = conn.execute(_LOCKING_SESSIONS, (ports,)).fetchone()
                if row is not None and row[0] > 0:
                    return True
                svc.resume()
                time.sleep(self.rng.uniform(0.0, 0.05))
        return False

    def _pg_restart(self) -> str:
        assert self.natives is not None
        down = self.rng.uniform(0.5, 3.0)
        self.natives[0].stop()
        try:
            time.sleep(down)
        finally:
            self.natives[0].start()
        return f"postgres down {down:.1f}s"

    def _kafka_restart(self) -> str:
        assert self.natives is not None
        down = self.rng.uniform(0.5, 3.0)
        self.natives[1].stop()
        try:
            time.sleep(down)
        finally:
            self.natives[1].start()
        return f"kafka broker down {down:.1f}s"

    def _storm(self) -> str:
        joiners: list[ConsumerService] = []
        for _ in range(self.rng.randint(2, 3)):
            n = len(self.extras)
            svc = ConsumerService(
                APP,
                env={**self.env, "ONCEFLOW_EXECUTOR_ID": f"chaos-x{n}"},
                pythonpath=[ROOT],
                args=["--stop-timeout", "5", "--progress-every", "5"],
                log_path=self.log_dir / f"x{n}.log",
            )
            self.extras.append(svc)
            joiners.append(svc)
            svc.start()
            time.sleep(self.rng.uniform(0.2, 1.0))
        joined = 0
        for svc in joiners:
            try:  # each join is a rebalance; wait for it before leaving
                svc.wait_for_output("assigned", timeout=20)
                joined += 1
            except AssertionError:
                pass
        time.sleep(self.rng.uniform(0.5, 2.0))
        killed = 0
        for svc in self.rng.sample(joiners, len(joiners)):
            if self.rng.random() < 0.25:
                svc.kill()  # left without a word: Kafka notices after the session
                killed += 1
            else:
                try:
                    svc.stop(timeout=30)
                except TimeoutError:
                    killed += 1
            time.sleep(self.rng.uniform(0.1, 1.0))
        return (
            f"{len(joiners)} services joined ({joined} got partitions) and left ({killed} killed)"
        )

    def stop(self) -> None:
        """Stop every service gracefully, all at once (killed past a minute)."""

        def stop(svc: ConsumerService) -> None:
            with contextlib.suppress(TimeoutError):
                svc.stop(timeout=60)

        running = [m.service for m in self.members] + self.extras
        threads = [threading.Thread(target=stop, args=(s,)) for s in running if s.is_alive()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def close(self) -> None:
        for svc in [m.service for m in self.members] + self.extras:
            svc.close()


# Sessions of these client ports inside a transaction that has written an
# effect not yet committed and holds workflow rows locked: its checkpoint
# (FOR SHARE on the row, at the run's epoch) is written too, so no one can claim
# that workflow until this transaction ends. Any state: a pipeline cut off
# mid-way shows as "active", not "idle in transaction".
_LOCKING_SESSIONS = """
SELECT count(*) FROM pg_stat_activity a
WHERE a.client_port = ANY(%s) AND a.xact_start IS NOT NULL
  AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.mode = 'RowExclusiveLock'
              AND l.relation = 'public.chaos_effects'::regclass)
  AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.mode = 'RowShareLock'
              AND l.relation = 'onceflow.workflows'::regclass)
"""


def schedule(config: ChaosConfig, rng: random.Random) -> list[tuple[float, str]]:
    """`config.faults` (time, kind) pairs: kinds as evenly mixed as the count
    allows, in random order, at random times within production."""
    kinds = [config.kinds[i % len(config.kinds)] for i in range(config.faults)]
    rng.shuffle(kinds)
    span = config.records / config.rate
    times = sorted(rng.uniform(0.1 * span, 0.9 * span) for _ in kinds)
    return list(zip(times, kinds, strict=True))


def native_services(server_url: str, bootstrap: str) -> tuple[NativePostgres, NativeKafka]:
    """The native services behind these addresses, which the run may restart.

    Raises:
        ChaosError: the addresses name other services (environment variables,
            containers), which the run cannot restart.
    """
    postgres, kafka = NativePostgres(), NativeKafka()

    def address(url: str) -> tuple[str, str]:
        info = conninfo_to_dict(url)
        return str(info.get("host")), str(info.get("port"))

    try:
        native = (address(postgres.url), kafka.bootstrap)
    except ServiceUnavailable:
        native = None
    if native != (address(server_url), bootstrap):
        raise ChaosError(
            "pg_restart and kafka_restart restart Postgres and Kafka, which the run can do only "
            f"to the native test services kept in {default_state_dir()} "
            "(`python -m consumers.testing.services up`); this run uses Postgres at "
            f"{':'.join(address(server_url))} and Kafka at {bootstrap}. Unset "
            "ONCEFLOW_TEST_DATABASE_URL and ONCEFLOW_TEST_KAFKA (and use no Docker engine), "
            "or leave those kinds out with --kinds."
        )
    return postgres, kafka


def run_chaos(
    config: ChaosConfig, *, server_url: str, bootstrap: str, say: Say = print
) -> ChaosResult:
    """Run the chaos run against these services and return what the checker found.

    Services, producer and faults are always cleaned up: every consumer
    service is killed and Postgres and Kafka are running again on return.
    """
    unknown = set(config.kinds) - set(KINDS)
    if unknown or not config.kinds:
        raise ChaosError(f"fault kinds are {', '.join(KINDS)}; got {', '.join(config.kinds)}")
    if min(config.records, config.partitions, config.keys, config.services) < 1:
        raise ChaosError("records, partitions, keys and services must each be at least 1")
    if config.rate <= 0 or config.faults < 0:
        raise ChaosError("rate must be positive and faults not negative")
    restarts = {"pg_restart", "kafka_restart"} & set(config.kinds)
    natives = native_services(server_url, bootstrap) if restarts else None
    seed = config.seed if config.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    name = f"chaos_{uuid.uuid4().hex[:10]}"
    log_dir = config.log_dir or Path.home() / ".cache" / "onceflow" / "chaos" / name
    log_dir.mkdir(parents=True, exist_ok=True)
    topic, group = name, f"{name}_group"
    say(
        f"chaos: seed {seed}, {config.records} records at {config.rate:g}/s over {config.keys} "
        f"keys, {config.partitions} partitions, {config.services} services, {config.faults} "
        f"faults of {','.join(config.kinds)}; logs in {log_dir}"
    )
    database_url = make_conninfo(server_url, dbname=name)
    env: dict[str, str | None] = {
        "ONCEFLOW_DATABASE_URL": database_url,
        "ONCEFLOW_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "ONCEFLOW_LEASE": str(config.lease),
        "ONCEFLOW_HEARTBEAT": str(config.heartbeat),
        "ONCEFLOW_SCHEMA": None,
        "ONCEFLOW_FAULT": None,
        "CHAOS_TOPIC": topic,
        "CHAOS_GROUP": group,
        "CHAOS_SESSION_TIMEOUT_MS": str(int(config.session_timeout * 1000)),
        "CHAOS_COMMIT_INTERVAL_MS": str(int(config.commit_interval * 1000)),
        "CHAOS_WORK_SECONDS": str(config.work_seconds),
    }
    chaos = Chaos(config, env, log_dir, rng, say, natives)
    feeder = Feeder(bootstrap, topic, config, seed)
    errors: list[str] = []
    drain: float | None = None
    findings = Findings()
    started = t0 = time.monotonic()
    try:
        create_database(server_url, name)
        create_topic(bootstrap, topic, partitions=config.partitions)
        chaos.start()
        say(f"chaos: {config.services} services joined group {group}; producing")
        t0 = time.monotonic()
        feeder.start()
        for at, kind in schedule(config, rng):
            while time.monotonic() < t0 + at:
                chaos.supervise(time.monotonic() - t0)
                time.sleep(0.2)
            chaos.inject(kind, t0)
            chaos.supervise(time.monotonic() - t0)
        while feeder.is_alive():
            chaos.supervise(time.monotonic() - t0)
            feeder.join(0.5)
        # The drain counts from the end of the last fault (or of production, with none).
        last = time.monotonic()
        if chaos.faults:
            last = t0 + chaos.faults[-1].at + chaos.faults[-1].took
        say(f"chaos: {feeder.acked} records produced in {time.monotonic() - t0:.0f}s; draining")
        deadline = time.monotonic() + config.drain_timeout
        while time.monotonic() < deadline:
            chaos.supervise(time.monotonic() - t0)
            try:
                if drained(database_url, bootstrap, topic, group):
                    drain = time.monotonic() - last
                    break
            except (psycopg.OperationalError, KafkaException):
                pass  # a service still coming back: look again
            time.sleep(0.5)
        chaos.stop()  # before checking: a late zombie write would show
        findings = check(database_url, bootstrap, topic, group)
    except BaseException:
        say(f"chaos: the run broke off; its database {database_url}, logs in {log_dir}")
        raise
    finally:
        feeder.stopping.set()
        chaos.close()
        if natives is not None:
            for native in natives:
                native.start()  # a no-op when it runs
        feeder.join(30)
        errors += [f"producer: {e}" for e in feeder.errors[:5]]
        result = ChaosResult(
            config,
            seed,
            findings,
            chaos.faults,
            feeder.acked,
            drain,
            time.monotonic() - t0,
            chaos.unexpected_exits,
            database_url,
            topic,
            group,
            log_dir,
            errors,
        )
        if result.ok and not config.keep:
            discard(result, server_url=server_url, bootstrap=bootstrap)
    say(f"chaos: setup and run took {time.monotonic() - started:.0f}s")
    return result


def report(result: ChaosResult, say: Say = print) -> None:
    """The fault log, the problems found, and the summary line last."""
    say("chaos: fault log (seconds since production started):")
    for fault in result.faults:
        say(f"  {fault.line()}")
    for line in result.unexpected_exits:
        say(f"chaos: unexpected exit: {line}")
    for problem in result.problems():
        say(f"chaos: FAILED: {problem}")
    if not result.ok:
        say(f"chaos: kept database {result.database_url} and logs in {result.log_dir}")
    say(result.summary())


def main(argv: Sequence[str] | None = None) -> int:
    defaults = ChaosConfig()
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--records", type=int, default=defaults.records)
    parser.add_argument("--partitions", type=int, default=defaults.partitions)
    parser.add_argument("--keys", type=int, default=defaults.keys)
    parser.add_argument("--services", type=int, default=defaults.services)
    parser.add_argument("--faults", type=int, default=defaults.faults, help="how many faults")
    parser.add_argument("--seed", type=int, default=None, help="repeat a run's choices")
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help=f"comma list of {', '.join(KINDS)}"
    )
    parser.add_argument("--rate", type=float, default=defaults.rate, help="records a second")
    parser.add_argument("--lease", type=float, default=defaults.lease)
    parser.add_argument("--heartbeat", type=float, default=defaults.heartbeat)
    parser.add_argument("--drain-timeout", type=float, default=defaults.drain_timeout)
    parser.add_argument("--work-seconds", type=float, default=defaults.work_seconds)
    parser.add_argument(
        "--commit-interval",
        type=float,
        default=defaults.commit_interval,
        help="seconds between the consumers' offset commits",
    )
    parser.add_argument("--log-dir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the database and topic")
    parser.add_argument(
        "--services-dir",
        type=Path,
        default=None,
        help="state directory of the native Postgres and Kafka the run starts (or reuses) and "
        f"restarts; default ${ENV_SERVICES_DIR}, else {CHAOS_SERVICES_DIR}: services of the "
        "run's own, so that restarting them disturbs no test session on the machine",
    )
    args = parser.parse_args(argv)
    os.environ[ENV_SERVICES_DIR] = str(
        args.services_dir or os.environ.get(ENV_SERVICES_DIR) or CHAOS_SERVICES_DIR
    )
    config = ChaosConfig(
        records=args.records,
        partitions=args.partitions,
        keys=args.keys,
        services=args.services,
        faults=args.faults,
        kinds=tuple(k.strip() for k in args.kinds.split(",") if k.strip()),
        rate=args.rate,
        seed=args.seed,
        lease=args.lease,
        heartbeat=args.heartbeat,
        drain_timeout=args.drain_timeout,
        work_seconds=args.work_seconds,
        commit_interval=args.commit_interval,
        log_dir=args.log_dir,
        keep=args.keep,
    )
    try:
        server_url, bootstrap = postgres_url(), kafka_bootstrap()
        result = run_chaos(config, server_url=server_url, bootstrap=bootstrap)
    except (ChaosError, ServiceUnavailable) as exc:
        print(f"chaos: error: {exc}", file=sys.stderr)
        return 2
    report(result)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
