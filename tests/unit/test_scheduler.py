"""The ordering scheduler (DESIGN.md §5): lanes, in-flight limits, buffers, revocation."""

from __future__ import annotations

import pytest

from consumers._scheduler import Ordering, Scheduler

P0, P1 = ("t", 0), ("t", 1)


def make(
    ordering: Ordering, *, max_in_flight: int = 100, max_buffered: int = 1000
) -> Scheduler[str]:
    return Scheduler(ordering, max_in_flight=max_in_flight, max_buffered=max_buffered)


def add(s: Scheduler[str], tp: tuple[str, int], key: bytes | None, offset: int) -> str:
    wid = f"{tp[1]}:{offset}"
    s.add(tp, key, offset, wid, wid)
    return wid


def ready(s: Scheduler[str]) -> list[str]:
    return [e.workflow_id for e in s.take_ready()]


def test_key_ordering_runs_a_key_in_offset_order_and_keys_side_by_side() -> None:
    s = make("key")
    a0, b1, a2, a3, b4 = (add(s, P0, k, o) for o, k in enumerate([b"a", b"b", b"a", b"a", b"b"]))
    assert ready(s) == [a0, b1]
    assert ready(s) == []  # nothing more until a lane head finishes
    s.done(a0)
    assert ready(s) == [a2]
    s.done(b1)
    s.done(a2)
    assert ready(s) == [b4, a3]


def test_keyless_records_share_their_partitions_lane() -> None:
    s = make("key")
    n0, k1, n2 = add(s, P0, None, 0), add(s, P0, b"k", 1), add(s, P0, None, 2)
    m0 = add(s, P1, None, 0)
    assert ready(s) == [n0, k1, m0]
    s.done(n0)
    assert ready(s) == [n2]


def test_the_same_key_in_two_partitions_is_two_lanes() -> None:
    s = make("key")
    x, y = add(s, P0, b"k", 0), add(s, P1, b"k", 0)
    assert ready(s) == [x, y]


def test_partition_ordering_runs_one_at_a_time_per_partition() -> None:
    s = make("partition")
    a0, a1 = add(s, P0, b"a", 0), add(s, P0, b"b", 1)
    b0 = add(s, P1, b"c", 0)
    assert ready(s) == [a0, b0]
    s.done(b0)
    assert ready(s) == []
    s.done(a0)
    assert ready(s) == [a1]


def test_no_ordering_runs_everything_at_once() -> None:
    s = make("none")
    ids = [add(s, P0, b"same", o) for o in range(5)]
    assert ready(s) == ids


@pytest.mark.parametrize("ordering", ["key", "partition", "none"])
def test_in_flight_never_exceeds_the_limit_in_total(ordering: Ordering) -> None:
    s = make(ordering, max_in_flight=3)
    for o in range(10):
        add(s, P0, f"k{o}".encode(), o)
        add(s, P1, f"k{o}".encode(), o)
    running: set[str] = set()
    finished = 0
    while finished < 20:
        started = ready(s)
        running |= set(started)
        assert len(running) == s.running <= 3
        assert s.running_in(P0) + s.running_in(P1) == s.running
        assert running, "nothing runs, nothing finishes: stuck"
        wid = min(running)
        running.discard(wid)
        s.done(wid)
        finished += 1
    assert s.running == 0 and s.total_buffered() == 0


def test_the_limit_lets_the_next_one_start_when_one_finishes() -> None:
    s = make("none", max_in_flight=2)
    ids = [add(s, P0, None, o) for o in range(4)]
    assert ready(s) == ids[:2]
    s.done(ids[1])
    assert ready(s) == [ids[2]]


def test_buffer_full_pauses_and_half_drained_resumes() -> None:
    s = make("partition", max_buffered=4)
    ids = [add(s, P0, None, o) for o in range(4)]
    assert s.is_full(P0) and not s.has_room(P0)
    assert not s.is_full(P1) and s.has_room(P1)
    ready(s)
    s.done(ids[0])
    assert not s.is_full(P0) and not s.has_room(P0)  # 3 held: not yet half
    ready(s)
    s.done(ids[1])
    assert s.has_room(P0)  # 2 held, half of 4
    assert s.buffered(P0) == 2


def test_buffered_counts_waiting_and_running_entries() -> None:
    s = make("key")
    add(s, P0, b"a", 0)
    add(s, P0, b"a", 1)
    add(s, P1, b"a", 0)
    ready(s)
    assert (s.buffered(P0), s.buffered(P1), s.total_buffered()) == (2, 1, 3)


def test_adding_a_workflow_twice_keeps_one_entry() -> None:
    s = make("none")
    add(s, P0, None, 0)
    add(s, P0, None, 0)
    assert s.total_buffered() == 1 and s.holds("0:0")
    assert ready(s) == ["0:0"]


def test_drop_partition_returns_its_work_and_frees_its_slots() -> None:
    s = make("key", max_in_flight=2)
    a0, a1 = add(s, P0, b"a", 0), add(s, P0, b"a", 1)
    c0 = add(s, P0, b"c", 2)
    b0 = add(s, P1, b"b", 0)
    assert ready(s) == [a0, c0]  # the limit leaves b0 waiting
    waiting, running = s.drop_partition(P0)
    assert sorted(e.workflow_id for e in running) == [a0, c0]
    assert [e.workflow_id for e in waiting] == [a1]
    assert not s.holds(a0) and s.buffered(P0) == 0 and s.running == 0
    # The slots the dropped runs held go to the other partition at once.
    assert ready(s) == [b0]
    # A dropped run that ends later changes nothing.
    s.done(a0)
    assert s.running == 1 and s.total_buffered() == 1
    # The partition can come back (reassigned) and starts afresh.
    again = add(s, P0, b"a", 1)
    assert again == a1 and ready(s) == [a1]


def test_done_on_an_entry_that_never_started_unblocks_its_lane() -> None:
    s = make("key")
    a0, a1 = add(s, P0, b"a", 0), add(s, P0, b"a", 1)
    s.done(a0)  # e.g. found finished elsewhere before it ran here
    assert ready(s) == [a1]
    assert s.total_buffered() == 1


@pytest.mark.parametrize(("in_flight", "buffered"), [(0, 10), (10, 0)])
def test_limits_below_one_are_refused(in_flight: int, buffered: int) -> None:
    with pytest.raises(ValueError):
        Scheduler("key", max_in_flight=in_flight, max_buffered=buffered)


def test_take_queued_lets_earlier_work_go_ahead_of_kept_lanes() -> None:
    # A partition lost and given back: its kept lanes still queue a2 behind the
    # running a0, and the hand-over finds a1 (recorded elsewhere meanwhile).
    s = make("key")
    a0, a2 = add(s, P0, b"a", 0), add(s, P0, b"a", 2)
    b3 = add(s, P0, b"b", 3)
    assert ready(s) == [a0, b3]
    s.done(b3)
    b4 = add(s, P0, b"b", 4)  # ready, not started
    taken = s.take_queued(P0)
    assert sorted(e.workflow_id for e in taken) == [a2, b4]
    assert s.holds(a0) and not s.holds(a2) and s.buffered(P0) == 1
    assert ready(s) == []  # b4 left the ready queue with its entry
    a1 = add(s, P0, b"a", 1)
    for e in sorted(taken, key=lambda e: e.offset):
        s.add(P0, e.key, e.offset, e.workflow_id, e.item)
    assert ready(s) == [b4]  # a's lane still waits for the running a0
    s.done(a0)
    assert ready(s) == [a1]
    s.done(a1)
    assert ready(s) == [a2]
