"""The chaos run's consumer service: two plain steps and one transaction step.

    CHAOS_TOPIC=... CHAOS_GROUP=... ONCEFLOW_DATABASE_URL=... \
    ONCEFLOW_KAFKA_BOOTSTRAP_SERVERS=... \
    python -m consumers.cli run bench.chaos_app:app

`bench.chaos` runs three of these (and more during a rebalance storm) and
creates the tables they write to (`bench.chaos_check.create_database`):

- each plain step (`parse`, `work`) appends one row to `public.chaos_step_runs`
  every time it really runs (a replay from its checkpoint does not), so the
  checker can count the re-runs plain steps are allowed (at-least-once);
- the transaction step (`record_effect`) inserts (workflow ID, event ID, key,
  seq) into `public.chaos_effects` in the same Postgres transaction as its
  checkpoint: a row written twice is a broken exactly-once promise, and the
  table's bigserial `id` gives the order in which each key's effects committed.

Settings: CHAOS_TOPIC, CHAOS_GROUP (required); CHAOS_BATCH_SIZE,
CHAOS_MAX_IN_FLIGHT, CHAOS_SESSION_TIMEOUT_MS (how soon Kafka hands a dead or
frozen member's partitions to another), CHAOS_COMMIT_INTERVAL_MS (how often the
consumer commits the offsets it stored), CHAOS_WORK_SECONDS (time the `work`
step takes) and CHAOS_EXECUTION (the subscription's `execution`, default auto). The engine's own settings come from ONCEFLOW_* as usual.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, cast

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout
from pydantic import BaseModel

from consumers import Event, Execution, KafkaApp
from engine import Engine, step_idempotency_key

TOPIC = os.environ["CHAOS_TOPIC"]
GROUP = os.environ["CHAOS_GROUP"]
WORK_SECONDS = float(os.environ.get("CHAOS_WORK_SECONDS", "0"))
# A plain step's log write waits this long for Postgres to come back before
# the step fails (a fault holds Postgres down for seconds, not minutes).
LOG_PATIENCE = 300.0

_LOG_RUN = (
    "INSERT INTO public.chaos_step_runs (run_key, step, workflow_id, executor)"
    " VALUES (%s, %s, %s, %s)"
)
# prev_seq: what this transaction sees of the key's earlier effects. With
# per-key order it is exactly seq - 1, each record's predecessor committed.
_EFFECT = (
    "INSERT INTO public.chaos_effects"
    ' (workflow_id, event_id, key, seq, prev_seq, partition, "offset", executor)'
    " SELECT %(wid)s, %(id)s, %(key)s, %(seq)s,"
    " (SELECT max(seq) FROM public.chaos_effects WHERE key = %(key)s),"
    " %(partition)s, %(offset)s, %(executor)s"
)


class ChaosRecord(BaseModel):
    """One produced record: `id` counts records, `seq` counts within `key`."""

    id: int
    key: str
    seq: int


eng = Engine()  # ONCEFLOW_DATABASE_URL, ONCEFLOW_LEASE, ONCEFLOW_EXECUTOR_ID, ...
app = KafkaApp(eng, batch_size=int(os.environ.get("CHAOS_BATCH_SIZE", "500")))
EXECUTOR = eng.executor_id

_pool: ConnectionPool | None = None
_pool_lock = threading.Lock()


def _configure(conn: psycopg.Connection[Any]) -> None:
    # The run log is a count, not a promise: no fsync per row. A Postgres
    # restart in the chaos run is a clean (fast) shutdown, which loses nothing.
    conn.execute("SET synchronous_commit = off")


def _log_pool() -> ConnectionPool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ConnectionPool(
                eng.settings.url(),
                min_size=1,
                max_size=4,
                kwargs={"autocommit": True},
                configure=_configure,
                check=ConnectionPool.check_connection,  # a restart leaves broken ones
                open=False,
                name="chaos-step-runs",
            )
            _pool.open(wait=False)
        return _pool


def log_run(step: str, workflow_id: str) -> None:
    """Append this run of a plain step to the run log, waiting out a Postgres outage."""
    run_key = step_idempotency_key()
    deadline = time.monotonic() + LOG_PATIENCE
    delay = 0.05
    while True:
        try:
            with _log_pool().connection(timeout=5) as conn:
                conn.execute(_LOG_RUN, (run_key, step, workflow_id, EXECUTOR))
            return
        except (psycopg.OperationalError, PoolTimeout):
            if time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(1.0, delay * 2)


@eng.step(name="parse")
def parse(workflow_id: str, value: ChaosRecord, partition: int, offset: int) -> dict[str, Any]:
    log_run("parse", workflow_id)
    return {
        "id": value.id,
        "key": value.key,
        "seq": value.seq,
        "partition": partition,
        "offset": offset,
    }


@eng.step(name="work")
def work(workflow_id: str, seq: int) -> int:
    log_run("work", workflow_id)
    if WORK_SECONDS:
        time.sleep(WORK_SECONDS)
    return seq * 2


@eng.transaction(name="record_effect")
def record_effect(conn: psycopg.Connection[Any], workflow_id: str, info: dict[str, Any]) -> None:
    conn.execute(_EFFECT, {**info, "wid": workflow_id, "executor": EXECUTOR})


@app.subscribe(
    TOPIC,
    group=GROUP,
    model=ChaosRecord,
    ordering="key",
    max_in_flight=int(os.environ.get("CHAOS_MAX_IN_FLIGHT", "64")),
    name="chaos",
    execution=cast(Execution, os.environ.get("CHAOS_EXECUTION", "auto")),
    consumer_config={
        "session.timeout.ms": int(os.environ.get("CHAOS_SESSION_TIMEOUT_MS", "6000")),
        "heartbeat.interval.ms": 500,
        # librdkafka's default is 5000: a short interval commits the offsets of
        # workflows still running, which a new owner then finds only in Postgres.
        "auto.commit.interval.ms": int(os.environ.get("CHAOS_COMMIT_INTERVAL_MS", "5000")),
    },
)
def handle(event: Event[ChaosRecord]) -> int:
    info = parse(event.workflow_id, event.value, event.partition, event.offset)
    work(event.workflow_id, info["seq"])
    record_effect(event.workflow_id, info)
    return int(info["id"])
