"""Which recorded workflows may run now: ordering lanes and in-flight limits.

Pure bookkeeping, no Kafka and no threads of its own (the caller holds the
lock), so the rules of DESIGN.md §5 are unit-tested directly:

- a *lane* is what must run one at a time, in offset order: a key within a
  partition (`ordering="key"`, keyless records share their partition's
  lane), a whole partition (`"partition"`), or nothing (`"none"`);
- at most `max_in_flight` run at once per partition and in total;
- at most `max_buffered` wait per partition: past that the consumer pauses
  the partition, and resumes it once half have drained, so memory stays
  bounded however large the backlog.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

Ordering = Literal["key", "partition", "none"]
TP = tuple[str, int]  # (topic, partition)
T = TypeVar("T")


@dataclass
class Entry(Generic[T]):
    tp: TP
    lane: object
    offset: int
    workflow_id: str
    item: T
    key: bytes | None = None
    running: bool = False
    ready: bool = False  # in the ready queue


@dataclass
class _Partition(Generic[T]):
    lanes: dict[object, deque[Entry[T]]] = field(default_factory=dict)
    buffered: int = 0  # entries waiting or running
    running: int = 0


class Scheduler(Generic[T]):
    def __init__(self, ordering: Ordering, *, max_in_flight: int, max_buffered: int) -> None:
        if max_in_flight < 1 or max_buffered < 1:
            raise ValueError("max_in_flight and max_buffered must be at least 1")
        self.ordering = ordering
        self.max_in_flight = max_in_flight
        self.max_buffered = max_buffered
        self._parts: dict[TP, _Partition[T]] = {}
        self._by_id: dict[str, Entry[T]] = {}
        self._ready: deque[Entry[T]] = deque()  # lane heads not yet started
        self.running = 0
        self._next_solo = 0

    def _lane(self, tp: TP, key: bytes | None) -> object:
        if self.ordering == "none":
            self._next_solo += 1
            return ("solo", self._next_solo)
        if self.ordering == "partition" or key is None:
            return ("partition",)
        return ("key", key)

    def lane_of(self, tp: TP, key: bytes | None) -> tuple[TP, object] | None:
        """The lane a record would join; None when it would be alone
        (`ordering="none"`)."""
        if self.ordering == "none":
            return None
        return (tp, self._lane(tp, key))

    def idle(self, tp: TP) -> bool:
        """Whether no workflow of partition `tp` is queued or running."""
        part = self._parts.get(tp)
        return part is None or not part.lanes

    def lane_busy(self, lane: tuple[TP, object] | None) -> bool:
        """Whether earlier workflows of this lane are still queued or running."""
        if lane is None:
            return False
        part = self._parts.get(lane[0])
        return part is not None and bool(part.lanes.get(lane[1]))

    def holds(self, workflow_id: str) -> bool:
        return workflow_id in self._by_id

    def workflow_ids(self) -> list[str]:
        return list(self._by_id)

    def entry(self, workflow_id: str) -> Entry[T] | None:
        return self._by_id.get(workflow_id)

    def add(self, tp: TP, key: bytes | None, offset: int, workflow_id: str, item: T) -> None:
        """Queue a workflow behind the earlier ones of its lane. Callers add a
        partition's entries in offset order."""
        if workflow_id in self._by_id:
            return
        part = self._parts.setdefault(tp, _Partition())
        lane_key = self._lane(tp, key)
        entry = Entry(tp, lane_key, offset, workflow_id, item, key)
        lane = part.lanes.setdefault(lane_key, deque())
        lane.append(entry)
        part.buffered += 1
        self._by_id[workflow_id] = entry
        if len(lane) == 1:
            entry.ready = True
            self._ready.append(entry)

    def take_ready(self) -> list[Entry[T]]:
        """Mark as running, and return, every entry that may start now."""
        started: list[Entry[T]] = []
        blocked: deque[Entry[T]] = deque()
        while self._ready and self.running < self.max_in_flight:
            entry = self._ready.popleft()
            entry.ready = False
            part = self._parts[entry.tp]
            if part.running >= self.max_in_flight:
                entry.ready = True
                blocked.append(entry)
                continue
            entry.running = True
            part.running += 1
            self.running += 1
            started.append(entry)
        self._ready.extendleft(reversed(blocked))
        return started

    def done(self, workflow_id: str) -> None:
        """A running entry finished: the next one of its lane becomes ready."""
        entry = self._by_id.pop(workflow_id, None)
        if entry is None:
            return
        part = self._parts[entry.tp]
        lane = part.lanes[entry.lane]
        lane.remove(entry)
        part.buffered -= 1
        if entry.running:
            part.running -= 1
            self.running -= 1
        elif entry.ready:
            self._ready.remove(entry)
        if not lane:
            del part.lanes[entry.lane]
        elif not lane[0].running and not lane[0].ready:
            lane[0].ready = True
            self._ready.append(lane[0])

    def drop_partition(self, tp: TP) -> tuple[list[Entry[T]], list[Entry[T]]]:
        """Forget a partition (revoked). Returns (waiting, running) entries:
        the waiting ones were never started and can be handed back at once."""
        part = self._parts.pop(tp, None)
        if part is None:
            return [], []
        waiting: list[Entry[T]] = []
        running: list[Entry[T]] = []
        for lane in part.lanes.values():
            for entry in lane:
                self._by_id.pop(entry.workflow_id, None)
                (running if entry.running else waiting).append(entry)
        self.running -= len(running)
        self._ready = deque(e for e in self._ready if e.tp != tp)
        return waiting, running

    def take_queued(self, tp: TP) -> list[Entry[T]]:
        """Remove, and return, a partition's entries that have not started, so
        that the caller can add them again merged with others in offset order.
        Running entries stay at the heads of their lanes."""
        part = self._parts.get(tp)
        if part is None:
            return []
        taken: list[Entry[T]] = []
        for lane_key, lane in list(part.lanes.items()):
            keep = deque(e for e in lane if e.running)
            taken.extend(e for e in lane if not e.running)
            if keep:
                part.lanes[lane_key] = keep
            else:
                del part.lanes[lane_key]
        for entry in taken:
            del self._by_id[entry.workflow_id]
        part.buffered -= len(taken)
        if any(e.ready for e in taken):
            self._ready = deque(e for e in self._ready if e.running or e.tp != tp)
        return taken

    def buffered(self, tp: TP) -> int:
        part = self._parts.get(tp)
        return 0 if part is None else part.buffered

    def running_in(self, tp: TP) -> int:
        part = self._parts.get(tp)
        return 0 if part is None else part.running

    def total_buffered(self) -> int:
        return len(self._by_id)

    def is_full(self, tp: TP) -> bool:
        """Pause the partition: it holds as much as it may."""
        return self.buffered(tp) >= self.max_buffered

    def has_room(self, tp: TP) -> bool:
        """Resume a paused partition: half of its buffer has drained."""
        return self.buffered(tp) <= self.max_buffered // 2
