"""InlineGovernor: which execution="auto" subscriptions run inline now.

Pure logic on a fake clock: STRIKES inline runs in a row over SLOW send a
subscription to the workers for COOL_OFF seconds; a fallback for
COOL_OFF_AFTER_FALLBACK; "inline" and "workers" subscriptions ignore it all.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from consumers._inline_policy import (
    COOL_OFF,
    COOL_OFF_AFTER_FALLBACK,
    SLOW,
    STRIKES,
    InlineGovernor,
)
from consumers._subscription import Execution, Subscription
from engine import NewWorkflow, Source

QUICK = SLOW / 10
SLOWER = SLOW * 3


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _subscription(name: str = "n", execution: Execution = "auto") -> Subscription:
    return Subscription(lambda e: None, name, ("t",), "g", None, "key", 1, 1, execution)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def governor(clock: Clock) -> InlineGovernor:
    return InlineGovernor(clock=clock)


def test_the_constants_are_the_documented_ones() -> None:
    # consumers/_app.py: "three runs in a row take over 10 ms each, then on
    # the workers for a minute ... a batch that fell back ... for 10 s".
    assert (SLOW, STRIKES, COOL_OFF, COOL_OFF_AFTER_FALLBACK) == (0.010, 3, 60.0, 10.0)


def test_auto_is_the_default_execution_and_starts_inline(governor: InlineGovernor) -> None:
    sub = Subscription(lambda e: None, "n", ("t",), "g", None, "key", 1, 1)
    assert sub.execution == "auto"
    assert governor.inline(sub)


def test_quick_runs_never_cool_off(governor: InlineGovernor, clock: Clock) -> None:
    sub = _subscription()
    for _ in range(1000):
        governor.ran(sub, QUICK)
        clock.advance(0.001)
        assert governor.inline(sub)
    # Exactly SLOW is not over SLOW.
    for _ in range(STRIKES * 3):
        governor.ran(sub, SLOW)
    assert governor.inline(sub)


@pytest.mark.parametrize("slow_runs", range(1, STRIKES))
def test_fewer_slow_runs_than_strikes_do_not_cool_off(
    governor: InlineGovernor, slow_runs: int
) -> None:
    sub = _subscription()
    for _ in range(slow_runs):
        governor.ran(sub, 5.0)
    assert governor.inline(sub)


def test_strikes_slow_runs_in_a_row_cool_off_for_exactly_cool_off(
    governor: InlineGovernor, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="onceflow.consumer")
    sub = _subscription("kafka:g:slow")
    for _ in range(STRIKES - 1):
        governor.ran(sub, SLOWER)
    assert governor.inline(sub)
    start = clock.now
    governor.ran(sub, SLOWER)
    assert not governor.inline(sub)

    (record,) = [r for r in caplog.records if r.name == "onceflow.consumer"]
    assert record.levelno == logging.INFO
    assert record.getMessage() == (
        f"kafka:g:slow runs on the worker threads for {COOL_OFF:.0f}s: "
        f"{STRIKES} runs in a row over {SLOW * 1000:.0f} ms (the last {SLOWER * 1000:.0f} ms)"
    )

    clock.now = start + COOL_OFF / 2
    assert not governor.inline(sub)
    clock.now = start + COOL_OFF - 1e-6
    assert not governor.inline(sub)
    clock.now = start + COOL_OFF
    assert governor.inline(sub)
    clock.now = start + COOL_OFF + 1000
    assert governor.inline(sub)


def test_after_a_cool_off_the_strikes_count_afresh(governor: InlineGovernor, clock: Clock) -> None:
    sub = _subscription()
    for _ in range(STRIKES):
        governor.ran(sub, SLOWER)
    assert not governor.inline(sub)
    clock.advance(COOL_OFF)
    assert governor.inline(sub)
    # The strikes that sent it away are spent: it takes STRIKES new ones.
    for _ in range(STRIKES - 1):
        governor.ran(sub, SLOWER)
        assert governor.inline(sub)
    governor.ran(sub, SLOWER)
    assert not governor.inline(sub)
    before = clock.now
    clock.advance(COOL_OFF - 0.5)
    assert not governor.inline(sub)
    clock.now = before + COOL_OFF
    assert governor.inline(sub)


def test_a_quick_run_between_slow_runs_resets_the_count(governor: InlineGovernor) -> None:
    sub = _subscription()
    for _ in range(10):
        for _ in range(STRIKES - 1):
            governor.ran(sub, SLOWER)
        governor.ran(sub, QUICK)
        assert governor.inline(sub)
    # From a reset, STRIKES - 1 slow runs are still not enough, STRIKES are.
    for _ in range(STRIKES - 1):
        governor.ran(sub, SLOWER)
    assert governor.inline(sub)
    governor.ran(sub, SLOWER)
    assert not governor.inline(sub)


def test_a_cool_off_after_a_fallback_lasts_cool_off_after_fallback(
    governor: InlineGovernor, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="onceflow.consumer")
    sub = _subscription("kafka:g:fails")
    start = clock.now
    governor.cool_off(sub, COOL_OFF_AFTER_FALLBACK, "an inline batch fell back")
    assert not governor.inline(sub)
    clock.now = start + COOL_OFF_AFTER_FALLBACK - 1e-6
    assert not governor.inline(sub)
    clock.now = start + COOL_OFF_AFTER_FALLBACK
    assert governor.inline(sub)
    messages = [r.getMessage() for r in caplog.records if r.name == "onceflow.consumer"]
    assert messages == [
        f"kafka:g:fails runs on the worker threads for {COOL_OFF_AFTER_FALLBACK:.0f}s: "
        "an inline batch fell back"
    ]


def test_a_cool_off_while_cooling_off_moves_the_end_without_logging_again(
    governor: InlineGovernor, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="onceflow.consumer")
    sub = _subscription()
    governor.cool_off(sub, COOL_OFF_AFTER_FALLBACK, "an inline batch fell back")
    clock.advance(5)
    governor.cool_off(sub, COOL_OFF_AFTER_FALLBACK, "an inline batch fell back")
    clock.advance(COOL_OFF_AFTER_FALLBACK - 1)
    assert not governor.inline(sub)  # 14 s after the first, 9 s after the second
    clock.advance(1)
    assert governor.inline(sub)
    assert len([r for r in caplog.records if r.name == "onceflow.consumer"]) == 1


@pytest.mark.parametrize(("execution", "inline"), [("inline", True), ("workers", False)])
def test_inline_and_workers_subscriptions_ignore_the_governor(
    governor: InlineGovernor,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
    execution: Execution,
    inline: bool,
) -> None:
    caplog.set_level(logging.INFO, logger="onceflow.consumer")
    sub = _subscription(execution=execution)
    assert governor.inline(sub) is inline
    for _ in range(STRIKES * 4):
        governor.ran(sub, 5.0)
        assert governor.inline(sub) is inline
    governor.cool_off(sub, COOL_OFF, "told to")
    governor.cool_off(sub, COOL_OFF_AFTER_FALLBACK, "an inline batch fell back")
    assert governor.inline(sub) is inline
    clock.advance(COOL_OFF * 2)
    assert governor.inline(sub) is inline
    assert not [r for r in caplog.records if r.name == "onceflow.consumer"]


def test_two_subscriptions_are_independent(governor: InlineGovernor, clock: Clock) -> None:
    slow, quick = _subscription("slow"), _subscription("quick")
    # Interleaved: the quick one's quick runs do not reset the slow one's count.
    for _ in range(STRIKES - 1):
        governor.ran(slow, SLOWER)
        governor.ran(quick, QUICK)
    assert governor.inline(slow) and governor.inline(quick)
    governor.ran(quick, SLOWER)  # one strike of the quick one's own
    governor.ran(slow, SLOWER)
    assert not governor.inline(slow)
    assert governor.inline(quick)

    # The quick one's count is its own: two more make its STRIKES.
    governor.ran(quick, SLOWER)
    assert governor.inline(quick)
    clock.advance(COOL_OFF / 2)
    governor.ran(quick, SLOWER)
    assert not governor.inline(quick)
    # Each ends its own cool-off.
    clock.advance(COOL_OFF / 2)
    assert governor.inline(slow)
    assert not governor.inline(quick)
    clock.advance(COOL_OFF / 2)
    assert governor.inline(quick)

    # A fallback of one cools only that one off.
    governor.cool_off(slow, COOL_OFF_AFTER_FALLBACK, "an inline batch fell back")
    assert not governor.inline(slow)
    assert governor.inline(quick)


def test_two_governors_share_nothing(clock: Clock) -> None:
    # One per group consumer: a slow handler in one group leaves another's alone.
    first, second = InlineGovernor(clock=clock), InlineGovernor(clock=clock)
    sub = _subscription()
    for _ in range(STRIKES):
        first.ran(sub, SLOWER)
    assert not first.inline(sub)
    assert second.inline(sub)


# -- the batch policy: which records of a batch may run inline -----------------


def _policy(
    owned: set[tuple[str, int]],
    offsets: list[int],
    keys: tuple[bytes, ...] = (b"k",),
    queued: Any = None,
) -> Any:
    """A BatchPolicy for records of topic "t", partitions 0 and 1, each of
    `keys` at each offset in turn; `queued(scheduler)` queues earlier work."""
    from consumers._event import Envelope
    from consumers._inline_policy import inline_policy
    from consumers._scheduler import Scheduler

    sub = _subscription()
    sched: Scheduler[Any] = Scheduler("key", max_in_flight=8, max_buffered=8)
    if queued is not None:
        queued(sched)
    envelopes = [
        Envelope("t", p, o, keys[o % len(keys)], b"{}", None, ()) for p in (0, 1) for o in offsets
    ]
    return inline_policy(
        {"t": sub}, {"t": sched}, threading.RLock(), envelopes, InlineGovernor(), owned.__contains__
    )


def _item(partition: int, offset: int, key: str = "k") -> NewWorkflow:
    return NewWorkflow(
        f"w-{partition}-{offset}", "n", (), source=Source("g", "t", partition, offset, key)
    )


def test_records_of_a_partition_not_owned_here_never_run_inline() -> None:
    # Partition 1 was revoked (or awaits its hand-over) after its records were
    # fetched: its earlier records may be queued elsewhere, so none of its
    # records may pass them by running here, now.
    policy = _policy({("t", 0)}, [5, 6])
    assert [policy(_item(0, o), True) for o in (5, 6)] == [True, True]
    assert [policy(_item(1, o), True) for o in (5, 6)] == [False, False]


def test_a_lane_with_earlier_work_queued_runs_nothing_inline_other_lanes_do() -> None:
    # Offset 3 of key "a" on partition 0 is still queued for a worker: the
    # batch's records of that lane must wait behind it; key "b" of the same
    # partition, and partition 1, have nothing earlier and run inline.
    def queued(sched: Any) -> None:
        sched.add(("t", 0), b"a", 3, "w-0-3", object())

    policy = _policy({("t", 0), ("t", 1)}, [4, 5, 6, 7], keys=(b"a", b"b"), queued=queued)
    keys = {4: "a", 5: "b", 6: "a", 7: "b"}
    ran = {(p, o): policy(_item(p, o, keys[o]), True) for p in (0, 1) for o in keys}
    assert [o for o in keys if not ran[0, o]] == [4, 6]
    assert all(ran[1, o] for o in keys)


def test_a_record_not_fresh_holds_its_lane_back_for_the_rest_of_the_batch() -> None:
    policy = _policy({("t", 0)}, [5, 6, 7])
    assert [policy(_item(0, 5), False), policy(_item(0, 6), True), policy(_item(0, 7), True)] == [
        False,
        False,
        False,
    ]


def test_a_record_not_fresh_holds_back_only_its_own_lane() -> None:
    # Keys by offset % 3: 6 and 5 are "a", 7 is "b".
    policy = _policy({("t", 0)}, [5, 6, 7], keys=(b"a", b"b", b"a"))
    ran = [policy(_item(0, 5, "a"), False), policy(_item(0, 6, "a"), True)]
    assert [*ran, policy(_item(0, 7, "b"), True)] == [False, False, True]
