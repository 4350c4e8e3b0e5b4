"""Which partitions need no lookup: the records a group consumer fetches from
them now are known not to be recorded yet.

A consumer records a partition's records in offset order, and starts (on
assignment) at the committed offset, behind which everything is recorded.
So once a batch finds none of a partition's records recorded, none after
them is either: the batches after it need not ask (Engine.send_lookup,
`ask`). That is about a tenth of Postgres's CPU per event, and some of
ours, on the inline path (bench/README.md).

A record taken for unrecorded that is recorded after all (a zombie's batch
of the same partition, or a gap a crash left between two pipelined batches)
costs a fall-back, never correctness: its inline insert fails and the batch
is recorded the ordinary way, which finds the row. That batch's answers then
show a recorded workflow, and the partition is asked about again.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence

from engine import Disposition, NewWorkflow, Recorded

from ._event import Envelope
from ._scheduler import TP

# What recording a workflow that did not exist yet comes back as.
_INSERTED = (Disposition.NEW, Disposition.COMPLETED)


class FreshPartitions:
    """The partitions past their recorded records; used from the consumer
    thread only (rebalance callbacks run there too, inside poll)."""

    def __init__(self) -> None:
        self._fresh: set[TP] = set()

    def to_ask(self, items: Sequence[NewWorkflow]) -> list[NewWorkflow]:
        """The items of a batch whose lookup is still needed."""
        fresh = self._fresh
        return [
            item
            for item in items
            if item.source is None or (item.source.topic, item.source.partition) not in fresh
        ]

    def learn(
        self,
        envelopes: Sequence[Envelope],
        recorded: Sequence[Recorded],
        assigned: Container[TP],
        *,
        all_inserted: bool = False,
    ) -> None:
        """A batch was recorded: a partition all of whose records in it were
        inserted now is fresh; one with any recorded before is not.
        `all_inserted`: the caller knows every record was."""
        if all_inserted:
            self._fresh.update(
                tp for tp in {(env.topic, env.partition) for env in envelopes} if tp in assigned
            )
            return
        inserted: dict[TP, bool] = {}
        for env, rec in zip(envelopes, recorded, strict=True):
            tp = (env.topic, env.partition)
            inserted[tp] = inserted.get(tp, True) and rec.disposition in _INSERTED
        for tp, all_inserted in inserted.items():
            if all_inserted and tp in assigned:
                self._fresh.add(tp)
            else:
                self._fresh.discard(tp)

    def forget(self, tps: Iterable[TP]) -> None:
        """Ask again about these (assigned anew, revoked, lost or rewound)."""
        self._fresh.difference_update(tps)
