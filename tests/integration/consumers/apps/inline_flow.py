"""The flow of apps/flow.py, subscribed with `execution="inline"`, able to fail.

Each record `{"key": ..., "seq": ...}` runs as a workflow that

1. `parse` (plain step) reads the event,
2. `record_effect` (transaction step) inserts (workflow ID, key, seq, ...) into
   the effects table, in the same Postgres transaction as its checkpoint
   (inline: in the transaction that records the poll batch),
3. `verify` (plain step, `fail_retries` retries) raises `Refused` for the
   record whose seq is `fail_seq`, every time: *after* its effect, so that an
   inline attempt that fails must roll the effect back, and the ordinary run
   then writes it once and ends in ERROR.

A `Runs` (in-process apps only) notes which thread ran each record's handler,
run after run: inline runs happen on the group's consumer thread
(`onceflow-group-…`), ordinary ones on the engine's workers.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any

import psycopg
from psycopg import sql

from apps.flow import EFFECTS, Order
from consumers import Event, Execution, KafkaApp


class Refused(Exception):
    """What `verify` raises for the failing record."""


class Runs:
    """Per seq: the thread name of each run of the handler, and the calls of `verify`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.threads: defaultdict[int, list[str]] = defaultdict(list)
        self.verified: defaultdict[int, int] = defaultdict(int)

    def ran(self, seq: int) -> None:
        with self._lock:
            self.threads[seq].append(threading.current_thread().name)

    def verify(self, seq: int) -> None:
        with self._lock:
            self.verified[seq] += 1


def subscribe_inline_flow(
    app: KafkaApp,
    *,
    topic: str,
    group: str,
    execution: Execution | None = "inline",
    delay: float = 0.0,
    fail_seq: int | None = None,
    fail_retries: int = 2,
    max_in_flight: int = 64,
    runs: Runs | None = None,
    consumer_config: dict[str, Any] | None = None,
    name: str | None = None,
) -> str:
    """Subscribe the flow to `topic` under `group` on `app` (`execution` None:
    the subscription's default); `parse` sleeps `delay` seconds first.
    Returns the workflow name."""
    eng = app.engine
    name = name or f"inline-flow:{group}"
    chosen: dict[str, Any] = {} if execution is None else {"execution": execution}
    executor = eng.executor_id
    insert = sql.SQL(
        'INSERT INTO {} (workflow_id, grp, key, seq, partition, "offset", executor)'
        " VALUES (%s, %s, %s, %s, %s, %s, %s)"
    ).format(sql.Identifier("public", EFFECTS))

    @eng.step(name="parse")
    def parse(value: Order, partition: int, offset: int) -> dict[str, Any]:
        if delay:
            time.sleep(delay)
        return {"key": value.key, "seq": value.seq, "partition": partition, "offset": offset}

    @eng.transaction(name="record_effect")
    def record_effect(conn: psycopg.Connection[Any], wid: str, info: dict[str, Any]) -> None:
        conn.execute(
            insert,
            (wid, group, info["key"], info["seq"], info["partition"], info["offset"], executor),
        )

    @eng.step(name="verify", retries=fail_retries, initial_delay=0.01, max_delay=0.05)
    def verify(seq: int) -> None:
        if seq != fail_seq:
            return
        if runs is not None:
            runs.verify(seq)
        raise Refused(f"record {seq} is refused")

    @app.subscribe(
        topic,
        group=group,
        model=Order,
        max_in_flight=max_in_flight,
        name=name,
        consumer_config=consumer_config,
        **chosen,
    )
    def handle(event: Event[Order]) -> int:
        if runs is not None:
            runs.ran(event.value.seq)
        info = parse(event.value, event.partition, event.offset)
        record_effect(event.workflow_id, info)
        verify(event.value.seq)
        return event.value.seq

    return name
