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

from apps.inline_flow import Refused, Runs, subscribe_inline_flow
from consumers import KafkaApp

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
    return subscribe_inline_flow(
        app,
        topic=topic,
        group=group,
        execution=None,
        delay=delay,
        fail_seq=fail_seq,
        fail_retries=fail_retries,
        max_in_flight=max_in_flight,
        runs=runs,
        name=f"auto-flow:{group}",
    )
