"""The handler under test: two plain steps and one transaction step.

Each record `{"key": ..., "seq": ...}` runs as a workflow that

1. `parse` (plain step) reads the event,
2. `work` (plain step) sleeps `step_delay` seconds, counted by a `Probe`,
3. `record_effect` (transaction step) inserts (workflow ID, key, seq, ...) into
   the effects table, in the same Postgres transaction as its checkpoint.

The effects table (in schema public) has no unique key, so an effect written twice shows as two
rows; its `id` (a bigserial) gives the order effects were written in.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Hashable, Iterator
from typing import Any

import psycopg
from psycopg import sql
from pydantic import BaseModel

from consumers import Event, Execution, KafkaApp, Ordering

EFFECTS = "effects"


class Order(BaseModel):
    key: str | None = None
    seq: int
    pad: str = ""


def create_effects_table(database_url: str, table: str = EFFECTS) -> None:
    query = sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} ("
        " id bigserial PRIMARY KEY, workflow_id text NOT NULL, grp text NOT NULL,"
        " key text, seq integer NOT NULL, partition integer NOT NULL,"
        ' "offset" bigint NOT NULL, executor text NOT NULL,'
        " written_at timestamptz NOT NULL DEFAULT clock_timestamp())"
    ).format(sql.Identifier("public", table))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(query)


class Probe:
    """Counts runs of the `work` step in progress, under labels, and keeps the peaks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active: Counter[Hashable] = Counter()
        self.peak: Counter[Hashable] = Counter()
        self.started = 0

    @contextlib.contextmanager
    def running(self, *labels: Hashable) -> Iterator[None]:
        with self._lock:
            self.started += 1
            for label in labels:
                self.active[label] += 1
                self.peak[label] = max(self.peak[label], self.active[label])
        try:
            yield
        finally:
            with self._lock:
                for label in labels:
                    self.active[label] -= 1


def subscribe_flow(
    app: KafkaApp,
    *,
    topic: str,
    group: str,
    effects_table: str = EFFECTS,
    ordering: Ordering = "key",
    max_in_flight: int = 256,
    max_buffered: int | None = None,
    step_delay: float = 0.0,
    probe: Probe | None = None,
    consumer_config: dict[str, Any] | None = None,
    execution: Execution = "auto",
) -> None:
    """Subscribe the flow to `topic` under `group` on `app`."""
    eng = app.engine
    executor = eng.executor_id
    insert = sql.SQL(
        'INSERT INTO {} (workflow_id, grp, key, seq, partition, "offset", executor)'
        " VALUES (%s, %s, %s, %s, %s, %s, %s)"
    ).format(sql.Identifier("public", effects_table))

    @eng.step(name="parse")
    def parse(value: Order, partition: int, offset: int) -> dict[str, Any]:
        return {"key": value.key, "seq": value.seq, "partition": partition, "offset": offset}

    @eng.step(name="work")
    def work(key: str | None, partition: int) -> None:
        if probe is None:
            time.sleep(step_delay)
            return
        lane = ("key", partition, key) if key is not None else ("keyless", partition)
        with probe.running("all", ("partition", partition), lane):
            time.sleep(step_delay)

    @eng.transaction(name="record_effect")
    def record_effect(conn: psycopg.Connection[Any], wid: str, info: dict[str, Any]) -> None:
        conn.execute(
            insert,
            (wid, group, info["key"], info["seq"], info["partition"], info["offset"], executor),
        )

    @app.subscribe(
        topic,
        group=group,
        model=Order,
        ordering=ordering,
        max_in_flight=max_in_flight,
        max_buffered=max_buffered,
        name=f"flow:{group}",
        consumer_config=consumer_config,
        execution=execution,
    )
    def handle(event: Event[Order]) -> int:
        info = parse(event.value, event.partition, event.offset)
        work(info["key"], event.partition)
        record_effect(event.workflow_id, info)
        return event.value.seq


def orders(count: int, *, keys: int = 8, start: int = 0, run: int = 1) -> list[tuple[str, bytes]]:
    """`count` records over `keys` keys, `run` in a row with the same key; `seq` is
    global, so it grows within each key."""

    def key(i: int) -> str:
        return f"k{(i // run) % keys}"

    return [
        (key(i), Order(key=key(i), seq=i).model_dump_json().encode())
        for i in range(start, start + count)
    ]
