"""The Engine: registration, starting and inspecting workflows, lifecycle."""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Container, Sequence
from concurrent.futures import Future
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

import orjson
import psycopg

from . import _inline, _migrate
from ._config import build_settings
from ._db import Database, Row, translate
from ._errors import (
    OnceflowError,
    SerializationError,
    WorkflowCancelledError,
    WorkflowConflictError,
    WorkflowFailedError,
    WorkflowNotFoundError,
)
from ._inline import InlineAbort, InlinePolicy
from ._models import (
    Claimed,
    Disposition,
    NewWorkflow,
    Recorded,
    Source,
    Status,
    StepRecord,
    WorkflowStatus,
)
from ._registry import Registry, StepSpec, Workflow, default_name
from ._retry import RetryPolicy
from ._runner import Outcome, Runner, call_step, call_transaction, error_record
from ._serialize import dumps, revive
from ._sql import Queries
from ._writer import CheckpointWriter

log = logging.getLogger("onceflow.engine")

P = ParamSpec("P")
R = TypeVar("R")


class WorkflowHandle(Generic[R]):
    """A started workflow: wait for its result, read its status."""

    def __init__(
        self, engine: Engine, workflow_id: str, run: Future[Outcome] | None = None
    ) -> None:
        self.engine = engine
        self.workflow_id = workflow_id
        self._run = run

    def _local(self) -> Future[Outcome] | None:
        return self._run or self.engine._runner.future(self.workflow_id)

    def result(self, timeout: float | None = None) -> R:
        """Wait for the workflow to end and return its result.

        Raises:
            WorkflowFailedError: it ended in ERROR (the error is attached).
            WorkflowCancelledError: it was cancelled.
            TimeoutError: it did not end within `timeout` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        local = self._local()
        if local is not None:
            outcome = local.result(timeout)
            if outcome.status is not None:
                return self._settle(outcome.status, outcome.output(), outcome.error)
        pause = 0.01
        while True:
            st = self.engine.get_workflow(self.workflow_id)
            if st.status.is_final:
                return self._settle(st.status, st.output, st.error)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"workflow {self.workflow_id!r} is still {st.status.value}")
            time.sleep(pause)
            pause = min(0.5, pause * 1.5)

    def _settle(self, status: Status, output: Any, error: dict[str, str] | None) -> R:
        if status is Status.SUCCESS:
            return output  # type: ignore[no-any-return]
        if status is Status.CANCELLED:
            raise WorkflowCancelledError(self.workflow_id)
        raise WorkflowFailedError(self.workflow_id, error or {})

    def status(self) -> WorkflowStatus:
        return self.engine.get_workflow(self.workflow_id)

    def add_done_callback(self, fn: Callable[[WorkflowHandle[R], Status | None], None]) -> None:
        """Call `fn(handle, status)` when this process's run ends (status None:
        the run was fenced off). If the workflow does not run here, at once
        with its current status."""
        local = self._local()
        if local is None:
            st = self.engine.get_workflow(self.workflow_id).status
            fn(self, st if st.is_final else None)
            return

        def done(f: Future[Outcome]) -> None:
            fn(self, f.result().status)

        local.add_done_callback(done)

    def __repr__(self) -> str:
        return f"<WorkflowHandle {self.workflow_id}>"


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
        )
        self.executor_id = self.settings.executor_id
        self._migrate = migrate
        self._q = Queries(self.settings.schema_name)
        self._db = Database(self.settings.url(), pool_size=min(32, self.settings.workers + 4))
        self._registry = Registry()
        # Several writers, each workflow always on the same one: its writes
        # stay in order, while one writer's commit overlaps another's batch.
        self._writers = [
            CheckpointWriter(self._db, self._q, max_batch=self.settings.max_batch, index=i)
            for i in range(self.settings.writers)
        ]
        self._runner = Runner(self, self.settings.workers)
        self._stop = threading.Event()
        self._inline_conns: dict[int, psycopg.Connection[Any]] = {}
        self._heartbeat_thread: threading.Thread | None = None
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

            @functools.wraps(fn)
            def run(*args: P.args, **kwargs: P.kwargs) -> R:
                return call_step(spec, args, kwargs)  # type: ignore[no-any-return]

            return run

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

            @functools.wraps(fn)
            def run(*args: P.args, **kwargs: P.kwargs) -> R:
                return call_transaction(self, spec, args, kwargs)  # type: ignore[no-any-return]

            return run

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
            self._beat()
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
        self.recover()
        self._heartbeat_thread = threading.Thread(
            target=self._heartbeat_loop, name="onceflow-heartbeat", daemon=True
        )
        self._heartbeat_thread.start()
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
        self._stop.set()
        if self._heartbeat_thread is not None:
            self._heartbeat_thread.join(5)
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

    def _beat(self) -> None:
        self._db.execute(
            self._q["heartbeat"],
            {
                "executor_id": self.executor_id,
                "hostname": socket.gethostname(),
                "pid": os.getpid(),
            },
        )

    def _heartbeat_loop(self) -> None:
        recover_every = max(self.settings.heartbeat, self.settings.lease / 2)
        last_recovery = time.monotonic()
        while not self._stop.wait(self.settings.heartbeat):
            try:
                self._beat()
                if time.monotonic() - last_recovery >= recover_every:
                    last_recovery = time.monotonic()
                    self.recover()
            except OnceflowError as exc:
                log.warning("heartbeat failed: %s", exc)
            except Exception:
                # Never let a bug end the heartbeat: this executor would look
                # dead and its work would be taken while it still runs it.
                log.exception("heartbeat or recovery failed")

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
        payload = dumps({"args": list(args), "kwargs": kwargs}, what=f"the input of {wf.name!r}")
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
        row = self._db.fetch_one(self._q["get_workflow"], {"workflow_id": workflow_id})
        if row is None:
            raise WorkflowNotFoundError(workflow_id)
        return _status(row)

    def list_workflows(
        self, *, status: Status | str | None = None, name: str | None = None, limit: int = 100
    ) -> list[WorkflowStatus]:
        st = None if status is None else Status(status).value
        rows = self._db.fetch_all(
            self._q["list_workflows"], {"status": st, "name": name, "limit": limit}
        )
        return [_status(r) for r in rows]

    def get_steps(self, workflow_id: str) -> list[StepRecord]:
        rows = self._db.fetch_all(self._q["load_steps"], {"workflow_id": workflow_id})
        return [
            StepRecord(
                r["step"],
                r["name"],
                _shown(r["output"]),
                r["error"],
                r["started_at"],
                r["finished_at"],
            )
            for r in rows
        ]

    def cancel(self, workflow_id: str) -> bool:
        """Cancel a PENDING workflow; a run in progress is fenced off at its next
        checkpoint. Returns False if it had already ended."""
        self.get_workflow(workflow_id)
        return (
            self._db.fetch_one(self._q["cancel_workflow"], {"workflow_id": workflow_id}) is not None
        )

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
        if not batch:
            return []
        inserted: set[str] | None = None
        completed: set[str] = set()
        if inline is not None:
            try:
                inserted, completed = self._record_inline(batch, inline)
            except InlineAbort as exc:
                log.info("inline batch of %d falls back to ordinary runs: %s", len(batch), exc)
        if inserted is None:
            inserted = self._insert_batch(batch)
        outcome: dict[str, Recorded] = {}
        for item in batch:
            if item.workflow_id in completed:
                outcome[item.workflow_id] = Recorded(item.workflow_id, Disposition.COMPLETED)
            elif item.workflow_id in inserted:
                if item.failure is not None:  # recorded straight into ERROR: nothing to run
                    outcome[item.workflow_id] = Recorded(item.workflow_id, Disposition.NEW)
                else:
                    claimed = Claimed(
                        item.workflow_id,
                        item.name,
                        1,
                        item.args,
                        item.kwargs,
                        item.source.offset if item.source else None,
                    )
                    outcome[item.workflow_id] = Recorded(
                        item.workflow_id, Disposition.NEW, claimed, fresh=True
                    )
        existing = [i.workflow_id for i in batch if i.workflow_id not in inserted]
        if existing:
            outcome.update(self.inspect(existing, holding=holding))
        return [outcome[i.workflow_id] for i in batch]

    def _record_inline(
        self, batch: Sequence[NewWorkflow], policy: InlinePolicy
    ) -> tuple[set[str], set[str]]:
        conn = self._inline_connection()
        try:
            # Pipeline mode: the users' statements go out without waiting for
            # each answer; an error in one surfaces at the next sync.
            with conn.pipeline():
                return _inline.run_batch(self, conn, batch, policy, self._insert_on)
        except InlineAbort:
            raise
        except psycopg.Error as exc:
            if conn.closed or conn.broken:
                self._inline_conns.pop(threading.get_ident(), None)
                raise translate(exc, self._db.url) from exc
            raise InlineAbort(f"{type(exc).__name__}: {exc}") from exc

    def _inline_connection(self) -> psycopg.Connection[Any]:
        # One per recording thread (one per consumer group), with psycopg's
        # default tuple rows: users' transaction steps run on it.
        conn = self._inline_conns.get(threading.get_ident())
        if conn is None or conn.closed:
            conn = self._db.connect(dict_rows=False)
            self._inline_conns[threading.get_ident()] = conn
        return conn

    def _insert_on(
        self,
        conn: psycopg.Connection[Any],
        batch: Sequence[NewWorkflow],
        outputs: dict[str, str],
    ) -> set[str]:
        """Insert `batch` on `conn`; those in `outputs` (their results, by
        workflow ID) already SUCCESS. Returns the IDs inserted."""
        if not batch:
            return set()
        params = {"owner": self.executor_id, "rows": _batch_document(batch, outputs)}
        return {row[0] for row in conn.execute(self._q["insert_workflows"], params).fetchall()}

    def _insert_batch(self, batch: Sequence[NewWorkflow]) -> set[str]:
        inserted = self._db.fetch_all(
            self._q["insert_workflows"],
            {"owner": self.executor_id, "rows": _batch_document(batch)},
        )
        return {r["workflow_id"] for r in inserted}

    def inspect(
        self, workflow_ids: Sequence[str], *, holding: Container[str] = ()
    ) -> dict[str, Recorded]:
        """Sort existing workflows: FINISHED, BUSY (a live executor, or this
        one, holds it) or CLAIMED now by this executor (its owner is gone)."""
        rows = self._db.fetch_all(
            self._q["inspect_existing"],
            {
                "workflow_ids": list(workflow_ids),
                "lease": self.settings.lease,
            },
        )
        result: dict[str, Recorded] = {}
        to_claim: list[str] = []
        for r in rows:
            wid = r["workflow_id"]
            if r["status"] != Status.PENDING:
                result[wid] = Recorded(wid, Disposition.FINISHED)
            elif (
                wid in holding
                or self._runner.is_active(wid)
                or (r["owner_alive"] and r["owner"] != self.executor_id)
            ):
                result[wid] = Recorded(wid, Disposition.BUSY)
            else:
                to_claim.append(wid)
        for claimed in self._claim(to_claim):
            result[claimed.workflow_id] = Recorded(
                claimed.workflow_id, Disposition.CLAIMED, claimed
            )
        for wid in workflow_ids:
            result.setdefault(wid, Recorded(wid, Disposition.BUSY))
        return result

    def _claim(self, workflow_ids: list[str]) -> list[Claimed]:
        if not workflow_ids:
            return []
        rows = self._db.fetch_all(
            self._q["claim_workflows"],
            {
                "workflow_ids": workflow_ids,
                "owner": self.executor_id,
                "lease": self.settings.lease,
            },
        )
        return sorted((_claimed(r) for r in rows), key=lambda c: c.source_offset or 0)

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
        rows = self._db.fetch_all(
            self._q["pending_for_source"],
            {
                "group": source.group,
                "topic": source.topic,
                "partition": source.partition,
                "lease": self.settings.lease,
            },
        )
        rows = [r for r in rows if r["workflow_id"] not in holding]
        claimable = [
            r["workflow_id"]
            for r in rows
            if not self._runner.is_active(r["workflow_id"])
            and (not r["owner_alive"] or r["owner"] in (None, self.executor_id))
        ]
        claimed = self._claim(claimable)
        got = {c.workflow_id for c in claimed}
        waiting: list[tuple[str, int, tuple[Any, ...]]] = []
        for r in rows:
            if r["workflow_id"] not in got:
                try:
                    args = tuple(revive(r["input"])["args"])
                except Exception:  # undecodable here: its own run parks it in ERROR
                    args = ()
                waiting.append((r["workflow_id"], r["source_offset"], args))
        return claimed, waiting

    def release(self, workflow_ids: Sequence[str]) -> None:
        """Hand PENDING workflows back (owner cleared, epoch bumped) so that any
        executor may claim them now; a run still going here is fenced off."""
        if workflow_ids:
            self._db.execute(
                self._q["release_workflows"],
                {
                    "workflow_ids": list(workflow_ids),
                    "owner": self.executor_id,
                },
            )

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
            claimed = _claimed(row)
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

    def _load_steps(self, workflow_id: str) -> dict[int, Row]:
        rows = self._db.retrying(
            lambda: self._db.fetch_all(self._q["load_steps"], {"workflow_id": workflow_id}),
            what="loading steps",
        )
        return {r["step"]: r for r in rows}

    def _holds(self, workflow_id: str, epoch: int) -> bool:
        """Whether a run at `epoch` still holds the workflow (PENDING, not claimed since)."""
        st = self._db.retrying(lambda: self.get_workflow(workflow_id), what="reading a workflow")
        return st.status is Status.PENDING and st.epoch == epoch

    def _get_step(self, workflow_id: str, step: int) -> Row | None:
        return self._db.retrying(
            lambda: self._db.fetch_one(
                self._q["get_step"], {"workflow_id": workflow_id, "step": step}
            ),
            what="reading a step",
        )


def _batch_document(batch: Sequence[NewWorkflow], outputs: dict[str, str] | None = None) -> str:
    """A batch of workflow rows as one JSON document (see insert_workflows):
    PENDING, or ERROR for a failure, or SUCCESS for those in `outputs` (their
    results as JSON, by workflow ID: run inline before their row is written)."""
    outputs = outputs or {}
    rows = []
    for item in batch:
        src = item.source
        payload = {"args": list(item.args), "kwargs": item.kwargs}
        output = outputs.get(item.workflow_id)
        rows.append(
            {
                "workflow_id": item.workflow_id,
                "name": item.name,
                "input": orjson.Fragment(dumps(payload, what=f"the input of {item.name!r}")),
                "status": _initial_status(item, output),
                "output": None if output is None else orjson.Fragment(output),
                "error": item.failure,
                "source_group": src.group if src else None,
                "source_topic": src.topic if src else None,
                "source_partition": src.partition if src else None,
                "source_offset": src.offset if src else None,
                "ordering_key": src.ordering_key if src else None,
            }
        )
    return orjson.dumps(rows).decode()


def _initial_status(item: NewWorkflow, output: str | None) -> str:
    if output is not None:
        return "SUCCESS"
    return "PENDING" if item.failure is None else "ERROR"


def _claimed(row: Row) -> Claimed:
    data = revive(row["input"])
    return Claimed(
        row["workflow_id"],
        row["name"],
        row["epoch"],
        tuple(data["args"]),
        dict(data["kwargs"]),
        row.get("source_offset"),
    )


def _shown(stored: Any) -> Any:
    """Stored JSON revived for display; as stored if it names a model that is
    gone, so that a workflow parked for that reason can still be inspected."""
    try:
        return revive(stored)
    except SerializationError:
        return stored


def _status(row: Row) -> WorkflowStatus:
    source = None
    if row["source_group"] is not None:
        source = Source(
            row["source_group"],
            row["source_topic"],
            row["source_partition"],
            row["source_offset"],
            row["ordering_key"],
        )
    return WorkflowStatus(
        workflow_id=row["workflow_id"],
        name=row["name"],
        status=Status(row["status"]),
        input=_shown(row["input"]),
        output=_shown(row["output"]),
        error=row["error"],
        owner=row["owner"],
        epoch=row["epoch"],
        attempts=row["attempts"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        source=source,
    )
