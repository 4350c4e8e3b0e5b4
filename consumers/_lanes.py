"""The workflows one group consumer runs: its lanes, the runs started from
them, the placeholders for workflows held elsewhere, and the hand-back of
work it lets go.

A lane (_scheduler.py) keeps the order of DESIGN.md §5; `dispatch` starts
whatever the lanes allow, and each run's end lets its lane move on. A
workflow another executor holds stays at the head of its lane as a
placeholder (`None` item) until it ends there or can be claimed here
(`check_foreign`), so a key's next record never runs before it.

One re-entrant lock guards the lanes; the group consumer guards its
assignment state with the same `lock`, so that a partition's lanes and its
assignment change together.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from engine import (
    Claimed,
    DatabaseUnavailableError,
    Disposition,
    Engine,
    OnceflowError,
    Status,
    WorkflowHandle,
)

from ._scheduler import TP, Entry, Scheduler
from ._subscription import Subscription

log = logging.getLogger("onceflow.consumer")

# A queued workflow to run: (claimed, fresh), or None for one that another
# live executor holds; it keeps its lane blocked until that one ends.
Item = tuple[Claimed, bool] | None


@dataclass
class GroupStats:
    consumed: int = 0
    recorded: int = 0
    duplicates: int = 0
    bad_records: int = 0
    succeeded: int = 0
    failed: int = 0
    handed_over: int = 0


class Lanes:
    """What a group consumer runs, lane by lane; see the module doc."""

    def __init__(
        self, engine: Engine, group: str, routes: dict[str, Subscription], stats: GroupStats
    ) -> None:
        self.engine = engine
        self.group = group
        self.stats = stats
        self.lock = threading.RLock()
        # One scheduler per subscription, shared by its topics (`routes`).
        by_sub: dict[int, Scheduler[Item]] = {}
        self.scheds: dict[str, Scheduler[Item]] = {}
        for topic, sub in routes.items():
            if id(sub) not in by_sub:
                by_sub[id(sub)] = Scheduler(
                    sub.ordering, max_in_flight=sub.max_in_flight, max_buffered=sub.max_buffered
                )
            self.scheds[topic] = by_sub[id(sub)]
        self._local = threading.local()
        self._handles: dict[str, WorkflowHandle[Any]] = {}
        self._foreign: set[str] = set()
        # Workflows to hand back whose release failed (Postgres away): retried
        # from the consumer thread, or their live lease would keep everyone waiting.
        self._unreleased: set[str] = set()

    def _schedulers(self) -> list[Scheduler[Item]]:
        return list({id(s): s for s in self.scheds.values()}.values())

    # -- queueing -------------------------------------------------------------

    def add(self, tp: TP, key: bytes | None, offset: int, workflow_id: str, item: Item) -> None:
        with self.lock:
            self.scheds[tp[0]].add(tp, key, offset, workflow_id, item)

    def held(self) -> set[str]:
        """Workflows in these lanes: queued, running or waited on. Never
        claimed again while held (a claim would bump the epoch and fence our
        own run). Runs outside the lanes (their partition was dropped) are not
        held: the engine reports them busy, so a new lane waits for them."""
        with self.lock:
            held = set(self._foreign)
            for sched in self._schedulers():
                held.update(sched.workflow_ids())
        return held

    def is_full(self, tp: TP) -> bool:
        return self.scheds[tp[0]].is_full(tp)

    def has_room(self, tp: TP) -> bool:
        return self.scheds[tp[0]].has_room(tp)

    def take_queued(self, tp: TP) -> None:
        """Forget what `tp`'s lanes queue but have not started."""
        with self.lock:
            self.scheds[tp[0]].take_queued(tp)

    # -- running --------------------------------------------------------------

    def dispatch(self) -> None:
        """Start every workflow the schedulers allow. Safe from any thread;
        re-entrant calls (a run that ended at once) leave the work to the
        outer loop."""
        if getattr(self._local, "busy", False):
            return
        self._local.busy = True
        try:
            while True:
                with self.lock:
                    ready: list[Entry[Item]] = []
                    for sched in self._schedulers():
                        ready.extend(sched.take_ready())
                    for entry in ready:
                        if entry.item is None:
                            self._foreign.add(entry.workflow_id)
                if not ready:
                    return
                for entry in ready:
                    if entry.item is not None:
                        self._start(entry, *entry.item)
        finally:
            self._local.busy = False

    def _start(self, entry: Entry[Item], claimed: Claimed, fresh: bool) -> None:
        handle = self.engine.run(claimed, fresh=fresh)
        with self.lock:
            self._handles[entry.workflow_id] = handle

        def finished(_: WorkflowHandle[Any], status: Status | None) -> None:
            self._finished(entry, status)

        handle.add_done_callback(finished)

    def _finished(self, entry: Entry[Item], status: Status | None) -> None:
        """A run here ended. If it was fenced off (status None: a zombie's work
        taken over, or handed back on revoke) the workflow is still PENDING,
        so it stays at the head of its lane as a placeholder until whoever
        holds it now ends it, or it can be claimed (check_foreign): letting
        the lane move on would run the key's next record before it."""
        wid = entry.workflow_id
        with self.lock:
            self._handles.pop(wid, None)
            if status is None and self.scheds[entry.tp[0]].holds(wid):
                self._foreign.add(wid)
                return
            if status is Status.SUCCESS:
                self.stats.succeeded += 1
            elif status is not None:
                self.stats.failed += 1
        self._settled(entry.tp, wid)

    def _settled(self, tp: TP, workflow_id: str) -> None:
        """The workflow is final: the next of its lane may run."""
        with self.lock:
            self._foreign.discard(workflow_id)
            self.scheds[tp[0]].done(workflow_id)
        self.dispatch()

    def check_foreign(self) -> None:
        """Ask Postgres about the workflows held elsewhere: run those that can
        be claimed now, and let the lanes of those that ended move on."""
        with self.lock:
            waiting = list(self._foreign)
        if not waiting:
            return
        try:
            found = self.engine.inspect(waiting)
        except DatabaseUnavailableError:
            return
        for wid, rec in found.items():
            if rec.claimed is not None:
                with self.lock:
                    self._foreign.discard(wid)
                    entry = self._entry(wid)
                if entry is not None:
                    self._start(entry, rec.claimed, False)
            elif rec.disposition is Disposition.FINISHED:
                with self.lock:
                    entry = self._entry(wid)
                if entry is not None:
                    self._settled(entry.tp, wid)
                else:
                    with self.lock:
                        self._foreign.discard(wid)

    def _entry(self, wid: str) -> Entry[Item] | None:
        for sched in self.scheds.values():
            entry = sched.entry(wid)
            if entry is not None:
                return entry
        return None

    # -- letting go -----------------------------------------------------------

    def drop(self, tps: set[TP]) -> tuple[list[str], dict[str, WorkflowHandle[Any]]]:
        """Empty the lanes of these partitions: (the queued workflows to hand
        back, the handles of those running)."""
        waiting: list[str] = []
        running: dict[str, WorkflowHandle[Any]] = {}
        with self.lock:
            for tp in tps:
                queued, started = self.scheds[tp[0]].drop_partition(tp)
                waiting += [e.workflow_id for e in queued if e.item is not None]
                for e in queued + started:
                    self._foreign.discard(e.workflow_id)
                for e in started:
                    if e.workflow_id in self._handles:
                        running[e.workflow_id] = self._handles[e.workflow_id]
        return waiting, running

    def hand_back(
        self, waiting: list[str], running: dict[str, WorkflowHandle[Any]], *, wait: float
    ) -> None:
        """Give the running workflows `wait` seconds, then hand them back with
        the waiting ones (their new owner resumes them from their last
        checkpoint)."""
        unfinished: list[str] = []
        deadline = time.monotonic() + wait
        for wid, handle in running.items():
            run = handle._local()
            if run is None:
                continue
            try:
                run.result(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                unfinished.append(wid)
        self.release_later(waiting + unfinished)
        self.retry_releases()

    def release_later(self, workflow_ids: list[str]) -> None:
        with self.lock:
            self._unreleased.update(workflow_ids)

    def unreleased(self) -> int:
        with self.lock:
            return len(self._unreleased)

    def retry_releases(self) -> None:
        """Hand back what was let go. A release that fails (Postgres away, a
        deadlock with the checkpoint writers) is kept and retried: a live
        executor that neither runs nor releases its workflows would hold them
        forever. Runs on the consumer thread, like every claim, so a workflow
        claimed here again meanwhile is never released under itself."""
        with self.lock:
            todo = sorted(self._unreleased - self.held())
            self._unreleased.clear()
        if not todo:
            return
        try:
            self.engine.release(todo)
        except OnceflowError as exc:
            log.warning(
                "group %s: handing %d workflows back failed, will retry: %s",
                self.group,
                len(todo),
                exc,
            )
            self.release_later(todo)

    # -- progress -------------------------------------------------------------

    def in_flight(self) -> int:
        with self.lock:
            return len(self._handles)

    def buffered(self) -> int:
        with self.lock:
            return sum(s.total_buffered() for s in self._schedulers())
