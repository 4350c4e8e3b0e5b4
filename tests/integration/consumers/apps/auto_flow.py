"""The flow of apps/inline_flow.py, subscribed with the default execution ("auto").

Each record `{"key": ..., "seq": ...}` runs as a workflow that

1. `parse` (plain step) reads the event, after sleeping `delay` seconds (a
   handler calling a slow service: over the governor's SLOW, it is sent to
   the workers),
2. `record_effect` (transaction step) inserts (workflow ID, key, seq, ...) into
   the effects table,
3. `verify` (plain step, `fail_retries` retries) raises `Refused` for the
   record whose seq is `fail_seq`, every time, after its effect.

The subscription passes no `execution`: what it gets is the default. A `Runs`
notes which thread ran each record's handler, run after run: the group's
consumer thread (`onceflow-group-…`) inline, `onceflow-worker-…` otherwise.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg import sql

from apps.flow import EFFECTS, Order
from apps.inline_flow import Refused, Runs
from consumers import Event, KafkaApp

__all__ = ["Refused", "Runs", "subscribe_auto_flow"]


def subscribe_auto_flow(
    app: KafkaApp,
    *,
    topic: str,
    group: str,
    delay: float = 0.0,
    fail_seq: int | None = None,
    fail_retries: int = 2,
    max_in_flight: int = 64,
    runs: Runs | None = None,
) -> str:
    """Subscribe the flow to `topic` under `group` on `app`, with no `execution`
    argument; returns the workflow name."""
    eng = app.engine
    executor = eng.executor_id
    name = f"auto-flow:{group}"
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

    @app.subscribe(topic, group=group, model=Order, max_in_flight=max_in_flight, name=name)
    def handle(event: Event[Order]) -> int:
        if runs is not None:
            runs.ran(event.value.seq)
        info = parse(event.value, event.partition, event.offset)
        record_effect(event.workflow_id, info)
        verify(event.value.seq)
        return event.value.seq

    return name
