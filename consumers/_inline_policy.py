"""Which fresh records of a batch run inline: the InlinePolicy a consumer
group hands to Engine.record (DESIGN.md §5)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from engine import InlinePolicy, NewWorkflow

from ._event import Envelope
from ._scheduler import TP, Scheduler
from ._subscription import Subscription


def inline_policy(
    routes: Mapping[str, Subscription],
    scheds: Mapping[str, Scheduler[Any]],
    lock: threading.RLock,
    envelopes: list[Envelope],
) -> InlinePolicy | None:
    """Which fresh records run inline (subscriptions with execution="inline"):
    only those whose lane holds nothing earlier, here or in the batch, so
    that running them now keeps their order (DESIGN.md §5).

    `routes` and `scheds` are the group's subscription and scheduler by topic;
    `lock` guards the schedulers."""
    if not any(s.execution == "inline" for s in routes.values()):
        return None
    lanes: dict[tuple[int, str, int], tuple[TP, object] | None] = {}
    for env in envelopes:
        sched = scheds[env.topic]
        lanes[env.offset, env.topic, env.partition] = sched.lane_of(
            (env.topic, env.partition), env.key
        )
    blocked: set[object] = set()

    def policy(item: NewWorkflow, fresh: bool) -> bool:
        src = item.source
        assert src is not None
        lane = lanes[src.offset, src.topic, src.partition]
        sched = scheds[src.topic]
        with lock:
            runnable = (
                fresh
                and routes[src.topic].execution == "inline"
                and lane not in blocked
                and not sched.lane_busy(lane)
            )
        if not runnable and lane is not None and item.failure is None:
            blocked.add(lane)
        return runnable

    return policy
