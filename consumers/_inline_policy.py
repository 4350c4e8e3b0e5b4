"""Which fresh records of a batch run inline: the InlinePolicy a consumer
group hands to Engine.record (DESIGN.md §5), and, for execution="auto", the
memory of which handlers have shown themselves slow."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from engine import NewWorkflow

from ._event import Envelope
from ._scheduler import TP, Scheduler
from ._subscription import Subscription

log = logging.getLogger("onceflow.consumer")

# execution="auto": STRIKES workflow runs in a row that each take longer than
# SLOW send their subscription to the workers for COOL_OFF seconds. An inline
# run holds up the whole consumer (every partition of the group), so only
# handlers that finish in about the time of a database round trip or two
# belong there; a handler calling a slow service is better spread over the
# worker threads. One slow run is not enough: a handler's first run in a
# process often sets things up (a connection, a cache).
SLOW = 0.010
STRIKES = 3
COOL_OFF = 60.0
# After an inline batch fell back (a handler raised), so that a handler that
# fails often does not run every batch twice.
COOL_OFF_AFTER_FALLBACK = 10.0


class InlineGovernor:
    """Which execution="auto" subscriptions run inline now: all of them,
    except those cooling off after a slow run or a fallback. One per group
    consumer; used from its thread only."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._until: dict[str, float] = {}
        # Slow runs in a row, by subscription (only those with some).
        self.striking: dict[str, int] = {}

    def inline(self, sub: Subscription) -> bool:
        if sub.execution != "auto":
            return sub.execution == "inline"
        until = self._until.get(sub.name)
        return until is None or self._clock() >= until

    def ran(self, sub: Subscription, seconds: float) -> None:
        """An inline run of `sub`'s handler took `seconds`."""
        if seconds <= SLOW:
            self.striking.pop(sub.name, None)
            return
        strikes = self.striking.get(sub.name, 0) + 1
        self.striking[sub.name] = strikes
        if strikes >= STRIKES:
            del self.striking[sub.name]
            why = f"{strikes} runs in a row over {SLOW * 1000:.0f} ms (the last {seconds * 1000:.0f} ms)"
            self.cool_off(sub, COOL_OFF, why)

    def cool_off(self, sub: Subscription, seconds: float, why: str) -> None:
        if sub.execution != "auto":
            return
        if self.inline(sub):
            log.info("%s runs on the worker threads for %.0fs: %s", sub.name, seconds, why)
        self._until[sub.name] = self._clock() + seconds


def inline_policy(
    routes: Mapping[str, Subscription],
    scheds: Mapping[str, Scheduler[Any]],
    lock: threading.RLock,
    envelopes: list[Envelope],
    governor: InlineGovernor,
    owned: Callable[[TP], bool],
) -> BatchPolicy | None:
    """Which fresh records run inline (subscriptions with execution="inline",
    or "auto" while their handler is quick): only those whose lane holds
    nothing earlier, here or in the batch, so that running them now keeps
    their order (DESIGN.md §5).

    `routes` and `scheds` are the group's subscription and scheduler by topic;
    `lock` guards the schedulers; `owned` tells (under `lock`) whether a
    partition is assigned here with its hand-over done. A record of any other
    partition (fetched before a revoke) never runs inline: the partition's
    earlier records may be queued elsewhere now, and running it would pass
    them."""
    if not any(governor.inline(s) for s in routes.values()):
        return None
    tps = {(env.topic, env.partition) for env in envelopes}
    # Per partition, once per batch rather than once per record. Nothing
    # changes either while the batch runs: ownership changes only in this
    # (the consumer's) thread, and so does new work in a lane; worker threads
    # only take work out. So a partition idle now stays idle, and its lanes
    # need no look (nor the lock) record by record.
    with lock:
        mine = {tp for tp in tps if owned(tp)}
        idle = {tp for tp in mine if scheds[tp[0]].idle(tp)}
    return BatchPolicy(routes, scheds, lock, governor, envelopes, mine, idle)


class BatchPolicy:
    """The InlinePolicy of one batch; `picked` names the subscriptions of the
    workflows it sent inline (an InlinePolicy, called in batch order; the
    engine reports how long each inline run took to `ran`)."""

    def __init__(
        self,
        routes: Mapping[str, Subscription],
        scheds: Mapping[str, Scheduler[Any]],
        lock: threading.RLock,
        governor: InlineGovernor,
        envelopes: list[Envelope],
        owned: set[TP],
        idle: set[TP],
    ) -> None:
        self._routes, self._scheds, self._lock = routes, scheds, lock
        self._governor, self._envelopes = governor, envelopes
        self._owned, self._idle = owned, idle
        # Each record's lane, by (offset, topic, partition): built only when
        # a record is not plainly runnable (see __call__).
        self._lanes: dict[tuple[int, str, int], tuple[TP, object] | None] | None = None
        self._blocked: set[object] = set()
        self.picked: dict[str, Subscription] = {}

    def __call__(self, item: NewWorkflow, fresh: bool) -> bool:
        src = item.source
        assert src is not None
        tp = (src.topic, src.partition)
        sub = self._routes[src.topic]
        # The usual case, at the cost of a few lookups: a fresh record of an
        # idle partition (so owned here, nothing queued in any of its lanes)
        # while no lane of the batch is held back. The rule below says yes
        # to it too, after looking up its lane.
        if fresh and not self._blocked and tp in self._idle and self._governor.inline(sub):
            self.picked[sub.name] = sub
            return True
        lane = self._lane_of(src.offset, src.topic, src.partition)
        runnable = (
            fresh
            and tp in self._owned
            and lane not in self._blocked
            and self._governor.inline(sub)
            and (tp in self._idle or not self._lane_busy(src.topic, lane))
        )
        if runnable:
            self.picked[sub.name] = sub
        elif lane is not None and item.failure is None:
            self._blocked.add(lane)
        return runnable

    def _lane_of(self, offset: int, topic: str, partition: int) -> tuple[TP, object] | None:
        if self._lanes is None:
            self._lanes = {
                (env.offset, env.topic, env.partition): self._scheds[env.topic].lane_of(
                    (env.topic, env.partition), env.key
                )
                for env in self._envelopes
            }
        return self._lanes[offset, topic, partition]

    def _lane_busy(self, topic: str, lane: tuple[TP, object] | None) -> bool:
        with self._lock:
            return self._scheds[topic].lane_busy(lane)

    def ran(self, item: NewWorkflow, seconds: float) -> None:
        # Called after every inline run: a quick run with no strikes to clear
        # returns at once.
        if seconds <= SLOW and not self._governor.striking:
            return
        assert item.source is not None
        self._governor.ran(self._routes[item.source.topic], seconds)
