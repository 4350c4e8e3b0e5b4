"""The Engine: registration, starting and inspecting workflows, lifecycle.

The Engine is the facade: the work behind many of its methods lives in
_sources.py (recording and claiming source-fed workflows), _catalog.py
(reading, listing and cancelling workflows), _heartbeat.py (the heartbeat
and the recovery it paces), _decorators.py (what a step's call does),
_handle.py (WorkflowHandle) and _rows.py (rows to and from models).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Container, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import orjson
import psycopg

from . import _migrate
from ._catalog import Catalog
from ._config import build_settings
from ._db import Database, Row, session_tag
from ._decorators import step_wrapper, transaction_wrapper
from ._errors import (
    OnceflowError,
    SerializationError,
    WorkflowConflictError,
)
from ._handle import WorkflowHandle
from ._heartbeat import Heartbeat
from ._inline import InlinePolicy
from ._lookup import Lookup
from ._models import (
    Claimed,
    NewWorkflow,
    Recorded,
    Source,
    Status,
    StepRecord,
    WorkflowStatus,
)
from ._multirow import Tables
from ._registry import Registry, StepSpec, Workflow, default_name
from ._retry import RetryPolicy
from ._rows import claimed_from_row
from ._runner import Runner, error_record
from ._serialize import dumps
from ._sources import PendingRecord, SourceIntake
from ._sql import Queries
from ._writer import CheckpointWriter

log = logging.getLogger("onceflow.engine")

P = ParamSpec("P")
R = TypeVar("R")


class Engine:
    """Durable workflows on Postgres.

    Args:
        database_url: Postgres URL; defaults to ONCEFLOW_DATABASE_URL.
        schema: schema of the system tables (default "onceflow").
        workers: workflows this process runs at once.
        lease: seconds of silence after which an executor's work is claimed.
        heartbeat: seconds between this executor's heartbeats.
        executor_id: stable identity; restarting under it resumes at once.
        writers: checkpoint writers (connections committing in parallel).
        inline_steps: also keep step checkpoints of workflows run inline
            (off by default: they end in the transaction recording them).
        inline_inputs: also keep the input of workflows run inline (off by
            default, for the same reason; their source says where it is).
        migrate: apply pending migrations in launch(); if False, launch()
            refuses an unmigrated schema.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        schema: str | None = None,
        workers: int | None = None,
        lease: float | None = None,
        heartbeat: float | None = None,
        executor_id: str | None = None,
        writers: int | None = None,
        inline_steps: bool | None = None,
        inline_inputs: bool | None = None,
        migrate: bool = True,
    ) -> None:
        self.settings = build_settings(
            database_url=database_url,
            schema_name=schema,
            workers=workers,
            lease=lease,
            heartbeat=heartbeat,
            executor_id=executor_id,
            writers=writers,
            inline_steps=inline_steps,
            inline_inputs=inline_inputs,
        )
        self.executor_id = self.settings.executor_id
        self._migrate = migrate
        self._q = Queries(self.settings.schema_name)
        self._db = Database(
            self.settings.url(),
            pool_size=min(32, self.settings.workers + 4),
            tag=session_tag(self.executor_id),
        )
        self._registry = Registry()
        # Several writers, each workflow always on the same one: its writes
        # stay in order, while one writer's commit overlaps another's batch.
        self._writers = [
            CheckpointWriter(self._db, self._q, max_batch=self.settings.max_batch, index=i)
            for i in range(self.settings.writers)
        ]
        self._runner = Runner(self, self.settings.workers)
        self._catalog = Catalog(self._db, self._q)
        self._heartbeat = Heartbeat(self._db, self._q, self.settings, self.recover)
        # Inline batches' connections, and their lookups', one each per
        # recording thread (see _sources.py), by (thread ident, role).
        self._inline_conns: dict[tuple[int, str], psycopg.Connection[Any]] = {}
        # Users' tables that take their inline steps' INSERTs multi-row (_multirow.py).
        self._tables = Tables(self._q["table_sees_statements"])
        self._sources = SourceIntake(self)
        self._launched = False
        self._closed = False

    # -- registration ---------------------------------------------------------

    def workflow(self, *, name: str | None = None) -> Callable[[Callable[P, R]], Workflow[P, R]]:
        """Register a durable workflow. Its name (default: module.qualname) is
        what recovery looks it up by, so keep it stable across deploys."""

        def register(fn: Callable[P, R]) -> Workflow[P, R]:
            wf = Workflow(self, fn, name or default_name(fn))
            self._registry.add_workflow(wf)
            return wf

        return register

    def step(
        self,
        *,
        name: str | None = None,
        retries: int = 0,
        backoff: float = 2.0,
        initial_delay: float = 0.1,
        max_delay: float = 30.0,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """A checkpointed step: recorded once, replayed from the record.

        Plain steps are at-least-once (a crash before the checkpoint runs them
        again): pass `step_idempotency_key()` to the outside world.
        """
        policy = RetryPolicy(retries, backoff, initial_delay, max_delay)

        def decorate(fn: Callable[P, R]) -> Callable[P, R]:
            spec = StepSpec(name or default_name(fn), fn, policy, transactional=False)
            return step_wrapper(spec, fn)

        return decorate

    def transaction(
        self,
        *,
        name: str | None = None,
        retries: int = 0,
        backoff: float = 2.0,
        initial_delay: float = 0.1,
        max_delay: float = 30.0,
    ) -> Callable[[Callable[Concatenate[psycopg.Connection[Any], P], R]], Callable[P, R]]:
        """An exactly-once step: its SQL and its checkpoint commit together.

        The function gets a psycopg connection inside an open transaction
        (callers leave it out). Don't commit or roll back on it: the engine
        does, together with many other workflows' steps, each under its own
        savepoint.
        """
        policy = RetryPolicy(retries, backoff, initial_delay, max_delay)

        def decorate(
            fn: Callable[Concatenate[psycopg.Connection[Any], P], R],
        ) -> Callable[P, R]:
            spec = StepSpec(name or default_name(fn), fn, policy, transactional=True)
            return transaction_wrapper(self, spec, fn)

        return decorate

    # -- lifecycle ------------------------------------------------------------

    def launch(self) -> None:
        """Migrate (or check the schema), register this executor, start the
        writer, workers and heartbeat, and resume this executor's own work."""
        if self._launched:
            return
        self._db.open()
        try:
            if self._migrate:
                _migrate.migrate(self._db, self.settings.schema_name)
            else:
                _migrate.check_migrated(self._db, self.settings.schema_name)
            self._heartbeat.beat()
            ended = self._db.fetch_all(
                self._q["end_own_transactions"], {"tag": session_tag(self.executor_id)}
            )
            if any(r["ended"] for r in ended):
                log.warning("ended transactions an earlier run under this executor ID left open")
            # Hand back what an earlier run under this executor ID left PENDING
            # (fencing that run, were it still alive): recovery below and the
            # heartbeat loop claim it as room allows. Claiming it as our own
            # instead would leave all but the first claim's worth stuck under a
            # live owner.
            self._db.execute(self._q["release_all_owned"], {"owner": self.executor_id})
        except BaseException:
            self._db.close()  # a refused launch keeps no pool connecting in the background
            raise
        for writer in self._writers:
            writer.start()
        self._runner.start()
        self._launched = True
        # The heartbeat first: from here on launch() returns at once, so a
        # heartbeat not started now would never be, and this executor would
        # look dead while it works (its work claimed, its transactions ended).
        self._heartbeat.start()
        try:
            self.recover()
        except OnceflowError as exc:  # Postgres went away just now
            log.warning("recovery at launch failed (the heartbeat tries again): %s", exc)
        log.info("executor %s launched (%d workers)", self.executor_id, self.settings.workers)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop: let running workflows finish within `timeout`, then hand the
        rest back so another executor takes them over at once."""
        if self._closed or not self._launched:
            self._closed = True
            return
        self._closed = True
        if not self._runner.wait_idle(timeout):
            log.warning(
                "%d workflows still running at shutdown; releasing them",
                self._runner.active_count(),
            )
        self._heartbeat.stop()
        for writer in self._writers:
            writer.stop()
        try:
            self._db.execute(self._q["release_all_owned"], {"owner": self.executor_id})
            self._db.execute(self._q["remove_executor"], {"executor_id": self.executor_id})
        except OnceflowError as exc:
            log.warning(
                "could not release work at shutdown (it will be claimed after the lease): %s", exc
            )
        self._runner.stop()
        for conn in list(self._inline_conns.values()):
            conn.close()
        self._db.close()

    def __enter__(self) -> Engine:
        self.launch()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def _require_launched(self) -> None:
        if not self._launched or self._closed:
            raise OnceflowError("the engine is not running: call launch() first")

    def recover(self) -> int:
        """Claim and run PENDING workflows whose executor is gone, or that were
        handed back, among those registered here. Runs by itself on launch and
        every half lease; returns how many it claimed."""
        room = max(0, 2 * self.settings.workers - self._runner.active_count())
        if room == 0:
            return 0
        rows = self._db.fetch_all(
            self._q["claim_orphans"],
            {
                "owner": self.executor_id,
                "lease": self.settings.lease,
                "limit": room,
                "names": self._registry.names(),
            },
        )
        for row in rows:
            self._run_row(row)
        if rows:
            log.info("recovered %d workflows", len(rows))
        return len(rows)

    # -- starting and inspecting ----------------------------------------------

    def start(self, wf: Workflow[P, R], *args: P.args, **kwargs: P.kwargs) -> WorkflowHandle[R]:
        """Start `wf` durably; returns at once. Pass `workflow_id=` (a keyword
        taken by the engine) to make the start idempotent: starting an ID that
        exists returns a handle to the workflow already there."""
        self._require_launched()
        workflow_id = kwargs.pop("workflow_id", None) or str(uuid.uuid4())
        if not isinstance(workflow_id, str):
            raise OnceflowError(f"workflow_id must be a string, got {type(workflow_id).__name__}")
        if not isinstance(wf, Workflow) or wf.engine is not self:
            raise OnceflowError(f"{wf!r} is not a workflow registered on this engine")
        payload = dumps({"args": list(args), "kwargs": kwargs}, what="the input of", name=wf.name)
        row = self._db.fetch_one(
            self._q["insert_workflow"],
            {
                "workflow_id": workflow_id,
                "name": wf.name,
                "input": payload,
                "owner": self.executor_id,
            },
        )
        if row is not None:
            claimed = Claimed(workflow_id, wf.name, row["epoch"], tuple(args), dict(kwargs))
            return WorkflowHandle(self, workflow_id, self._runner.submit(claimed, fresh=True))
        existing = self.get_workflow(workflow_id)
        if existing.name != wf.name:
            raise WorkflowConflictError(workflow_id, existing.name, wf.name)
        return WorkflowHandle(self, workflow_id)

    def handle(self, workflow_id: str) -> WorkflowHandle[Any]:
        return WorkflowHandle(self, workflow_id)

    def get_workflow(self, workflow_id: str) -> WorkflowStatus:
        return self._catalog.get(workflow_id)

    def list_workflows(
        self, *, status: Status | str | None = None, name: str | None = None, limit: int = 100
    ) -> list[WorkflowStatus]:
        """The `limit` newest workflows (by created_at), of one status and
        name if given.

        Raises:
            ValueError: on an unknown status or a limit below 1.
        """
        return self._catalog.newest(status=status, name=name, limit=limit)

    def get_steps(self, workflow_id: str) -> list[StepRecord]:
        return self._catalog.steps(workflow_id)

    def cancel(self, workflow_id: str) -> bool:
        """Cancel a PENDING workflow; a run in progress is fenced off at its next
        checkpoint. Returns False if it had already ended."""
        return self._catalog.cancel(workflow_id)

    def resume(self, workflow_id: str) -> WorkflowHandle[Any]:
        """Run a workflow again under the same ID, after a fix: steps that
        completed are replayed from their records, the failed step and those
        after it run again. A SUCCESS workflow is left as it is, and so is one
        running in this process."""
        self._require_launched()
        if self._runner.is_active(workflow_id):
            # Reopening would fence the run off, and leave nothing to run it.
            return WorkflowHandle(self, workflow_id)
        with self._db.connection() as conn, conn.transaction():
            row = conn.execute(
                self._q["reopen_workflow"],
                {
                    "workflow_id": workflow_id,
                    "owner": self.executor_id,
                },
            ).fetchone()
            if row is not None:
                conn.execute(self._q["forget_failed_steps"], {"workflow_id": workflow_id})
        if row is None:
            self.get_workflow(workflow_id)  # raises WorkflowNotFoundError
        else:
            self._run_row({"workflow_id": workflow_id, **row})
        return WorkflowHandle(self, workflow_id)

    # -- for integrations that feed workflows from a source (consumers) -------

    def record(
        self,
        batch: Sequence[NewWorkflow],
        *,
        holding: Container[str] = (),
        inline: InlinePolicy | None = None,
    ) -> list[Recorded]:
        """Record a batch of workflows in one statement, then sort out the ones
        that already existed (DESIGN.md §4 step 3).

        When this returns, every workflow of the batch is durable in Postgres:
        only then may the source acknowledge them. The result, in batch order,
        says which to run (`claimed` is set) and which to leave. `holding`
        names workflows the caller already holds (queued to run): never claimed
        again, they come back BUSY.

        With `inline`, the fresh workflows it picks (called in batch order with
        each item and whether it was inserted now) run to completion inside the
        recording transaction and come back COMPLETED (see _inline.py). If one
        of them raises, the batch is recorded the ordinary way instead.
        """
        self._require_launched()
        return self._sources.record(batch, holding=holding, inline=inline)

    def send_record(
        self,
        batch: Sequence[NewWorkflow],
        *,
        holding: Container[str] = (),
        inline: InlinePolicy | None = None,
        lookup: Lookup | None = None,
    ) -> PendingRecord:
        """`record`, in two halves: an inline batch is sent up to its COMMIT
        without waiting, and `result()` of the answer waits for Postgres and
        returns what `record` would have. In between, the caller may do work
        of its own that needs nothing of this batch (a consumer fetches and
        decodes its next batch while Postgres commits this one). Nothing of
        the batch is durable before `result()` returns; call it before
        anything else uses this engine from this thread (the batch holds the
        thread's inline connection). Without `inline`, the batch is recorded
        before this returns. `lookup`: `send_lookup(batch)`'s, sent earlier
        from this thread (it is read here in any case)."""
        self._require_launched()
        return self._sources.send(batch, holding=holding, inline=inline, lookup=lookup)

    def send_lookup(
        self, batch: Sequence[NewWorkflow], *, ask: Sequence[NewWorkflow] | None = None
    ) -> Lookup:
        """Ask, without waiting, which of `batch`'s workflows are recorded,
        on a connection of this thread's own (not the inline one): pass the
        answer to `send_record(batch, lookup=...)`, which then need not ask
        (and wait) itself. Meant to overlap the previous batch's COMMIT; one
        at a time per thread. Never raises: a lookup that could not be sent
        is simply asked again by send_record.

        `ask`: only these of the batch (the caller knows the others are not
        recorded; with none, nothing is sent). Should one be recorded after
        all, the inline batch that ran it falls back to ordinary runs, which
        find its row: never a second completion, though its plain steps may
        have run once more (they are at-least-once)."""
        self._require_launched()
        return self._sources.send_lookup(batch, ask)

    def inspect(
        self, workflow_ids: Sequence[str], *, holding: Container[str] = ()
    ) -> dict[str, Recorded]:
        """Sort existing workflows: FINISHED, BUSY (a live executor, or this
        one, holds it) or CLAIMED now by this executor (its owner is gone)."""
        return self._sources.inspect(workflow_ids, holding=holding)

    def claim_source(
        self, source: Source, *, holding: Container[str] = ()
    ) -> tuple[list[Claimed], list[tuple[str, int, tuple[Any, ...]]]]:
        """Claim the PENDING workflows of one source partition (group, topic,
        partition) that have no live owner, oldest first.

        Returns them, and every other PENDING workflow of the partition that the
        caller does not hold, as (workflow ID, source offset, args): held by a
        live executor (this one included: a run still going here), or locked by
        one that is frozen mid-commit. The caller
        must keep those ahead of later work of their lane, and wait for them or
        claim them later (`inspect`), so that source order survives the
        hand-over (DESIGN.md §5, on assign).
        """
        return self._sources.claim_source(source, holding=holding)

    def release(self, workflow_ids: Sequence[str]) -> None:
        """Hand PENDING workflows back (owner cleared, epoch bumped) so that any
        executor may claim them now; a run still going here is fenced off."""
        self._sources.release(workflow_ids)

    def run(self, claimed: Claimed, *, fresh: bool = False) -> WorkflowHandle[Any]:
        """Run a workflow this executor owns (from `record` or `claim_source`)."""
        self._require_launched()
        return WorkflowHandle(self, claimed.workflow_id, self._runner.submit(claimed, fresh=fresh))

    def active_count(self) -> int:
        """Workflows running in this process now."""
        return self._runner.active_count()

    # -- internals used by the runner ----------------------------------------

    def _run_row(self, row: Row) -> None:
        try:
            claimed = claimed_from_row(row)
        except SerializationError as exc:
            # Claimed, but its input cannot be decoded here: park it in ERROR
            # (resume() redrives it once fixed) rather than hold it forever.
            log.error("workflow %s: %s", row["workflow_id"], exc)
            self._writer_for(row["workflow_id"]).complete(
                row["workflow_id"],
                row["epoch"],
                Status.ERROR.value,
                output=None,
                error=orjson.dumps(error_record(exc)).decode(),
            )
            return
        if not self._registry.knows(claimed.name):
            log.error(
                "workflow %s: no workflow named %r is registered here; leaving it",
                claimed.workflow_id,
                claimed.name,
            )
            return
        self._runner.submit(claimed)

    def _writer_for(self, workflow_id: str) -> CheckpointWriter:
        return self._writers[hash(workflow_id) % len(self._writers)]
