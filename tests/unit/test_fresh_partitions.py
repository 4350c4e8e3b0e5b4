"""FreshPartitions: which partitions a group consumer need not ask about."""

from __future__ import annotations

from consumers._event import Envelope
from consumers._fresh import FreshPartitions
from engine import Disposition, NewWorkflow, Recorded, Source


def _item(partition: int, offset: int) -> NewWorkflow:
    return NewWorkflow(
        f"wf-{partition}-{offset}", "flow", (), source=Source("g", "t", partition, offset, None)
    )


def _envelope(partition: int, offset: int) -> Envelope:
    return Envelope(
        topic="t",
        partition=partition,
        offset=offset,
        key=None,
        value=b"{}",
        timestamp_ms=None,
        headers=[],
    )


def _learn(
    fresh: FreshPartitions, outcomes: dict[tuple[int, int], Disposition], assigned: set[int]
) -> None:
    envelopes = [_envelope(p, o) for p, o in outcomes]
    recorded = [Recorded(f"wf-{p}-{o}", d) for (p, o), d in outcomes.items()]
    fresh.learn(envelopes, recorded, {("t", p) for p in assigned})


def _asked(fresh: FreshPartitions) -> list[str]:
    return [i.workflow_id for i in fresh.to_ask([_item(0, 9), _item(1, 9), _item(2, 9)])]


def test_everything_is_asked_about_at_first() -> None:
    assert _asked(FreshPartitions()) == ["wf-0-9", "wf-1-9", "wf-2-9"]


def test_a_partition_whose_batch_was_all_inserted_now_is_asked_no_more() -> None:
    fresh = FreshPartitions()
    _learn(
        fresh,
        {
            (0, 1): Disposition.COMPLETED,
            (0, 2): Disposition.NEW,
            (1, 1): Disposition.FINISHED,  # redelivered: recorded before
            (1, 2): Disposition.COMPLETED,
            (2, 1): Disposition.BUSY,
        },
        assigned={0, 1, 2},
    )
    assert _asked(fresh) == ["wf-1-9", "wf-2-9"]


def test_a_recorded_workflow_found_later_makes_its_partition_asked_again() -> None:
    fresh = FreshPartitions()
    _learn(fresh, {(0, 1): Disposition.COMPLETED, (1, 1): Disposition.NEW}, assigned={0, 1})
    _learn(fresh, {(0, 2): Disposition.FINISHED, (1, 2): Disposition.CLAIMED}, assigned={0, 1})
    assert _asked(fresh) == ["wf-0-9", "wf-1-9", "wf-2-9"]


def test_partitions_not_assigned_or_forgotten_are_asked_about() -> None:
    fresh = FreshPartitions()
    _learn(
        fresh,
        {(0, 1): Disposition.NEW, (1, 1): Disposition.NEW, (2, 1): Disposition.NEW},
        assigned={0, 1},  # partition 2 was revoked while its batch was recorded
    )
    fresh.forget([("t", 1)])
    assert _asked(fresh) == ["wf-1-9", "wf-2-9"]


def test_told_all_were_inserted_every_assigned_partition_of_the_batch_is_fresh() -> None:
    fresh = FreshPartitions()
    envelopes = [_envelope(0, 1), _envelope(1, 1), _envelope(0, 2)]
    recorded = [Recorded(f"wf-{e.partition}-{e.offset}", Disposition.COMPLETED) for e in envelopes]
    fresh.learn(envelopes, recorded, {("t", 0)}, all_inserted=True)  # 1 was revoked meanwhile
    assert _asked(fresh) == ["wf-1-9", "wf-2-9"]


def test_a_batch_all_of_fresh_partitions_asks_nothing_and_one_without_source_asks() -> None:
    fresh = FreshPartitions()
    _learn(fresh, {(0, 1): Disposition.NEW, (1, 1): Disposition.NEW}, assigned={0, 1})
    assert fresh.to_ask([_item(0, 5), _item(1, 5), _item(0, 6)]) == []
    sourceless = NewWorkflow("wf-x", "flow", ())
    assert fresh.to_ask([_item(0, 7), sourceless]) == [sourceless]
