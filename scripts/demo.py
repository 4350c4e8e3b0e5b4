"""The orders demo: Kafka events in, each one's workflow completed exactly once.

    python scripts/demo.py [--events 2000]

1. Brings up Postgres and Kafka: `docker compose up` when a Docker engine
   answers, else private native services (consumers.testing._services);
2. applies the migrations (`onceflow migrate`), creates the `orders` topic;
3. starts the consumer service as a real process,
   `python -m consumers.cli run examples.orders.app:app`;
4. produces the sample orders (one in a hundred broken on purpose);
5. shows progress every second until every event is accounted for: records
   consumed, workflows completed (SUCCESS) and parked (ERROR), consumer lag;
6. stops the service with SIGTERM and checks, in Postgres, that each order
   was paid exactly once and each broken record parked once.

Exits 0 only if nothing is missing, doubled or out of order. The services stay
up afterwards; the demo's tables live in the database `onceflow_demo`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import LiteralString, TextIO
from urllib.parse import urlsplit, urlunsplit

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic  # confluent-kafka 2.16 does not re-export it for mypy
from psycopg import sql
from psycopg.conninfo import make_conninfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `python scripts/demo.py` from anywhere: find the example

from consumers import workflow_id  # noqa: E402
from consumers.testing import _services  # noqa: E402
from examples.orders.produce import Delivered, produce  # noqa: E402

APP = "examples.orders.app:app"
DEMO_DATABASE = "onceflow_demo"
PARTITIONS = 4
# What docker-compose.yml publishes on the host (tests/unit/test_compose.py checks it).
COMPOSE_DATABASE_URL = "postgresql://onceflow:onceflow@localhost:5432/onceflow"
COMPOSE_KAFKA = "localhost:9092"
STATE_DIR = Path.home() / ".cache" / "onceflow" / "demo"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python scripts/demo.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--events", type=int, default=2000, help="orders to produce (default 2000)")
    parser.add_argument(
        "--services",
        choices=("auto", "compose", "native"),
        default="auto",
        help="where Postgres and Kafka come from (auto: docker compose if a Docker engine"
        " answers, else native ones)",
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for every event (300)"
    )
    args = parser.parse_args(argv)
    if args.events < 1:
        parser.error("--events must be at least 1")
    with _one_demo_at_a_time():
        try:
            return _demo(args.events, args.services, args.timeout)
        except _services.ServiceUnavailable as exc:
            print(f"demo: {exc}", file=sys.stderr)
            return 2
        except (RuntimeError, psycopg.Error, KafkaException) as exc:
            print(f"demo: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130


def _demo(events: int, services: str, timeout: float) -> int:
    server_url, bootstrap = _bring_up(services)
    database_url = _demo_database(server_url)
    env = {
        **os.environ,
        "ONCEFLOW_DATABASE_URL": database_url,
        "ONCEFLOW_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("ONCEFLOW_SCHEMA", None)  # the summary reads the default schema, "onceflow"
    os.environ.update(ONCEFLOW_DATABASE_URL=database_url)  # read when the app is imported
    import examples.orders.app as orders

    sub = orders.app.subscriptions[0]
    topic, group = sub.topics[0], sub.group
    print(f"database  {database_url}\nkafka     {bootstrap}")

    _onceflow(["migrate"], env)  # as docker-compose.yml's `migrate` service does
    with psycopg.connect(database_url) as conn:
        orders.setup(conn)  # the app creates its table on first use; the summary reads it now
    topic_id, partitions = _ensure_topic(bootstrap, topic)
    print(f"topic     {topic} ({partitions} partitions), group {group}")

    STATE_DIR.mkdir(parents=True, exist_ok=True)
    log_path = STATE_DIR / "consumer.log"
    watch = _Watch(bootstrap, database_url, topic, group, partitions)
    if backlog := watch.lag():
        print(f"backlog   {backlog} records of earlier runs not yet consumed: they go first")
    with log_path.open("w") as log, _service(env, log) as service, contextlib.closing(watch):
        print(f"service   pid {service.pid}: onceflow run {APP}  (log: {log_path})")
        started = time.monotonic()
        delivered = produce(
            bootstrap,
            events,
            topic=topic,
            progress=lambda done, total: print(f"produced  {done}/{total}", flush=True),
        )
        ids = {workflow_id(group, topic, topic_id, d.partition, d.offset): d for d in delivered}
        settled = watch.until_settled(list(ids), service, started + timeout)
        elapsed = time.monotonic() - started
        code = _stop(service)
    if not settled:
        print(f"FAILED: not every event was accounted for; see {log_path}", file=sys.stderr)
        print(_tail(log_path), file=sys.stderr)
        return 1
    if code == 0:
        print("service   stopped gracefully by SIGTERM (exit 0)")
    else:
        print(f"FAILED: the service exited with {code} on SIGTERM; see {log_path}", file=sys.stderr)
        print(_tail(log_path), file=sys.stderr)
    ok = _summary(database_url, ids, elapsed)
    return 0 if ok and code == 0 else 1


# -- services ------------------------------------------------------------------


def _bring_up(services: str) -> tuple[str, str]:
    """(Postgres server URL, Kafka bootstrap) from docker compose or native services."""
    if services == "compose" or (services == "auto" and _docker_answers()):
        print("services  docker compose up -d --wait postgres kafka")
        compose = ["docker", "compose", "-f", str(ROOT / "docker-compose.yml")]
        done = subprocess.run([*compose, "up", "-d", "--wait", "postgres", "kafka"], check=False)
        if done.returncode != 0:
            raise _services.ServiceUnavailable(
                "`docker compose up` failed (its output is above); or run the demo on"
                " native services: python scripts/demo.py --services native"
            )
        return COMPOSE_DATABASE_URL, COMPOSE_KAFKA
    if services == "native":
        postgres, kafka = _services.NativePostgres(), _services.NativeKafka()
        postgres.start()
        kafka.start()
        return postgres.url, kafka.bootstrap
    # No Docker engine: ONCEFLOW_TEST_* services when set, else native ones.
    print("services  no Docker engine: native Postgres and Kafka (consumers.testing.services)")
    return _services.postgres_url(), _services.kafka_bootstrap()


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _demo_database(server_url: str) -> str:
    """Create the demo's database if missing; return its URL."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        exists = "SELECT 1 FROM pg_database WHERE datname = %s"
        if conn.execute(exists, [DEMO_DATABASE]).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DEMO_DATABASE)))
    parts = urlsplit(server_url)
    if parts.scheme in ("postgres", "postgresql"):
        return urlunsplit(parts._replace(path=f"/{DEMO_DATABASE}"))
    return make_conninfo(server_url, dbname=DEMO_DATABASE)


def _ensure_topic(bootstrap: str, topic: str) -> tuple[str, int]:
    """Create `topic` if missing; return its ID (part of every workflow ID) and partitions."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    deadline = time.monotonic() + 60
    while True:
        try:
            desc = admin.describe_topics(TopicCollection([topic]))[topic].result(30)
            if all(p.leader is not None for p in desc.partitions):
                return str(desc.topic_id), len(desc.partitions)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise
            new = NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)
            try:
                admin.create_topics([new])[topic].result(30)
                print(f"created   topic {topic} with {PARTITIONS} partitions")
            except KafkaException as created:  # another process created it meanwhile
                if created.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
        if time.monotonic() > deadline:
            raise _services.ServiceUnavailable(f"topic {topic} has no leader after 60s")
        time.sleep(0.2)


@contextlib.contextmanager
def _one_demo_at_a_time() -> Iterator[None]:
    # Every run consumes `orders` as group `billing`: two at once would split
    # the partitions between them, and each would miss the other's events.
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with (STATE_DIR / "lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("another demo is running on this machine; waiting for it", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _onceflow(args: list[str], env: dict[str, str]) -> None:
    cmd = [sys.executable, "-m", "consumers.cli", *args]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"onceflow {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    print(f"migrate   {done.stdout.strip()}")


@contextlib.contextmanager
def _service(env: dict[str, str], log: TextIO) -> Iterator[subprocess.Popen[bytes]]:
    """The consumer service as a real process, stopped (SIGTERM) however we leave."""
    cmd = [sys.executable, "-m", "consumers.cli", "run", APP, "--progress-every", "5"]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM: the service stops consuming, lets running workflows finish, commits."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(60)
        except subprocess.TimeoutExpired:
            print("service   ignored SIGTERM for 60s; killing it", file=sys.stderr)
            proc.kill()
    return proc.wait()


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# -- progress --------------------------------------------------------------------


@dataclass
class _Counts:
    recorded: int = 0
    success: int = 0
    error: int = 0
    lag: int | None = None


class _Watch:
    """Where the produced events are: workflows in Postgres, lag in Kafka."""

    def __init__(
        self,
        bootstrap: str,
        database_url: str,
        topic: str,
        group: str,
        partitions: int,
    ) -> None:
        self.database_url = database_url
        self.ids: list[str] = []
        self.partitions = [TopicPartition(topic, p) for p in range(partitions)]
        # Reads the group's committed offsets; never subscribes, so never joins it.
        self.kafka = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
        )
        self.tty = sys.stdout.isatty()

    def close(self) -> None:
        self.kafka.close()

    def counts(self) -> _Counts:
        found = _Counts()
        with psycopg.connect(self.database_url, connect_timeout=5) as conn:
            rows = conn.execute(
                "SELECT status, count(*) FROM onceflow.workflows"
                " WHERE workflow_id = ANY(%s) GROUP BY status",
                [self.ids],
            ).fetchall()
        by_status: dict[str, int] = dict(rows)
        found.recorded = sum(by_status.values())
        found.success = by_status.get("SUCCESS", 0)
        found.error = by_status.get("ERROR", 0)
        found.lag = self.lag()
        return found

    def lag(self) -> int:
        """End offsets minus the group's committed offsets, over all partitions."""
        total = 0
        for tp in self.kafka.committed(self.partitions, timeout=10):
            low, high = self.kafka.get_watermark_offsets(tp, timeout=10, cached=False)
            total += high - (tp.offset if tp.offset >= 0 else low)
        return total

    def until_settled(
        self, ids: list[str], service: subprocess.Popen[bytes], deadline: float
    ) -> bool:
        """Show progress each second until the workflow of every one of `ids` is
        final and the group's offsets are committed to the end; False on timeout
        or if the service died."""
        self.ids = ids
        start = time.monotonic()
        expected = len(self.ids)
        while True:
            try:
                c = self.counts()
                line = (
                    f"{time.monotonic() - start:6.1f}s  consumed {c.recorded:>{len(str(expected))}}"
                    f"/{expected}  SUCCESS {c.success}  ERROR {c.error}"
                    f"  running {c.recorded - c.success - c.error}  lag {c.lag}"
                )
                if c.success + c.error == expected and c.lag:
                    line += "  (waiting for the group's next offset commit)"
            except (psycopg.OperationalError, KafkaException) as exc:
                c, line = _Counts(), f"(services not answering, retrying: {exc})"
            self._show(line)
            if c.success + c.error == expected and c.lag == 0:
                self._show(line, final=True)
                return True
            if service.poll() is not None:
                self._show(f"service exited with {service.returncode}", final=True)
                return False
            if time.monotonic() > deadline:
                self._show(line + "  -- timed out", final=True)
                return False
            time.sleep(1.0)

    def _show(self, line: str, *, final: bool = False) -> None:
        if self.tty:  # one line, rewritten in place
            sys.stdout.write(f"\r\x1b[K{line}" + ("\n" if final else ""))
            sys.stdout.flush()
        elif not final:
            print(line, flush=True)


# -- summary ---------------------------------------------------------------------


def _summary(database_url: str, ids: dict[str, Delivered], elapsed: float) -> bool:
    """Count, in Postgres, what became of every event; True if all is as it should be."""
    valid = [wid for wid, d in ids.items() if d.valid]
    broken = [wid for wid, d in ids.items() if not d.valid]
    q = {"all": list(ids), "valid": valid, "broken": broken}
    with psycopg.connect(database_url) as conn:

        def one(query: LiteralString) -> int:
            row = conn.execute(query, q).fetchone()
            assert row is not None
            return int(row[0])

        statuses = conn.execute(
            "SELECT status, count(*) FROM onceflow.workflows"
            " WHERE workflow_id = ANY(%(all)s) GROUP BY status ORDER BY status DESC",
            q,
        ).fetchall()
        paid = one(
            "SELECT count(*) FROM onceflow.workflows"
            " WHERE workflow_id = ANY(%(valid)s) AND status = 'SUCCESS'"
        )
        parked = one(
            "SELECT count(*) FROM onceflow.workflows WHERE workflow_id = ANY(%(broken)s)"
            " AND status = 'ERROR' AND error->>'type' = 'BadRecord'"
        )
        payments = one("SELECT count(*) FROM public.payments WHERE workflow_id = ANY(%(all)s)")
        paid_orders = one(
            "SELECT count(DISTINCT workflow_id) FROM public.payments WHERE workflow_id = ANY(%(all)s)"
        )
        steps = one("SELECT count(*) FROM onceflow.steps WHERE workflow_id = ANY(%(valid)s)")
        # Three checkpoints per order, or none for one run inline (its steps
        # ended in the transaction that recorded it: nothing replays them).
        odd_steps = one(
            "SELECT count(*) FROM (SELECT workflow_id FROM unnest(%(valid)s::text[]) v(workflow_id)"
            " LEFT JOIN onceflow.steps s USING (workflow_id)"
            " GROUP BY workflow_id HAVING count(s.step) NOT IN (0, 3)) odd"
        )
        # Per customer (the record key), payments must follow offset order.
        out_of_order = one(
            "SELECT count(*) FROM (SELECT p.id, lag(p.id) OVER"
            " (PARTITION BY p.customer_id ORDER BY w.source_offset) AS before"
            " FROM public.payments p JOIN onceflow.workflows w USING (workflow_id)"
            " WHERE p.workflow_id = ANY(%(all)s)) t WHERE before > id"
        )
    by_status: dict[str, int] = dict(statuses)
    missing = len(ids) - sum(by_status.values())
    duplicates = payments - paid_orders
    shown = ", ".join(f"{s} {n}" for s, n in by_status.items()) or "none"
    print(
        f"\nsummary (Postgres database {DEMO_DATABASE}):\n"
        f"  events produced      {len(ids)} ({len(valid)} orders, {len(broken)} broken on purpose)\n"
        f"  workflows            {shown}; missing {missing}\n"
        f"  orders paid          {paid}/{len(valid)}, each in 3 steps ({steps} checkpoints; runs inline keep none)\n"
        f"  broken records       {parked}/{len(broken)} parked in ERROR with their raw bytes\n"
        f"  payments rows        {payments}, duplicates {duplicates}\n"
        f"  per-customer order   {'kept' if out_of_order == 0 else f'{out_of_order} out of order'}\n"
        f"  time                 {elapsed:.1f}s, first event produced to last accounted for"
    )
    problems = [
        f"{missing} events have no workflow" if missing else "",
        f"{len(valid) - paid} orders not SUCCESS" if paid != len(valid) else "",
        f"{len(broken) - parked} broken records not parked" if parked != len(broken) else "",
        f"{duplicates} duplicate payments" if duplicates else "",
        f"{len(valid) - paid_orders} orders unpaid" if paid_orders != len(valid) else "",
        f"{odd_steps} orders with neither 3 step checkpoints nor none" if odd_steps else "",
        f"{out_of_order} payments out of per-customer order" if out_of_order else "",
    ]
    problems = [p for p in problems if p]
    counts = (
        f"{len(ids)} events -> {paid} SUCCESS, {parked} ERROR (parked), {payments} payments,"
        f" {duplicates} duplicates, {missing} missing"
    )
    if problems:
        print(f"FAILED: {counts}: " + "; ".join(problems))
        return False
    print(f"OK: {counts}")
    return True


if __name__ == "__main__":
    sys.exit(main())
