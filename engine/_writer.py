"""The group-commit writer: many workflows' checkpoints in one transaction.

Workflow threads hand their step checkpoints, transaction steps and
completions to one writer thread. It takes everything queued, writes it in
one Postgres transaction (one fsync for the lot), then wakes every waiter
(DESIGN.md §4 steps 6 and 7). While one batch commits the next one queues,
so the batch grows with the load: the writer commits as often as it can,
never on a timer.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from datetime import datetime
from typing import Any

import orjson
import psycopg

from ._db import RETRYABLE, Database
from ._errors import DatabaseUnavailableError, OnceflowError
from ._jobs import CompleteJob, Job, StepJob, TxFunction, TxJob, TxResult, TxVerdict
from ._serialize import dumps
from ._sql import Queries

log = logging.getLogger("onceflow.writer")


class CheckpointWriter:
    def __init__(
        self, db: Database, queries: Queries, *, max_batch: int = 1000, index: int = 0
    ) -> None:
        self._db = db
        self._q = queries
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._loop, name=f"onceflow-writer-{index}", daemon=True
        )
        self._stopping = threading.Event()
        # _take sets _stop_taken on the stop sentinel; _closed is set (under the
        # lock) once the thread takes no more jobs: later ones fail at once
        # instead of waiting for a writer that is gone.
        self._stop_taken = False
        self._closed = False
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self.batches = 0
        self.jobs = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop. Waiters left over get an error."""
        self._stopping.set()
        self._queue.put(None)
        self._thread.join(timeout)
        if self._conn is not None:
            self._conn.close()

    # -- what workflow threads call -------------------------------------------

    def write_step(
        self,
        workflow_id: str,
        epoch: int,
        step: int,
        name: str,
        *,
        output: str | None,
        error: str | None,
        started_at: datetime | None,
    ) -> Future[bool]:
        """Checkpoint a step; the future says whether the row was written."""
        job = StepJob(
            workflow_id,
            epoch,
            step=step,
            name=name,
            output=output,
            error=error,
            started_at=started_at,
        )
        return self._submit(job)

    def run_transaction(
        self,
        workflow_id: str,
        epoch: int,
        step: int,
        name: str,
        fn: TxFunction,
        started_at: datetime | None,
    ) -> Future[TxResult]:
        """Run `fn(conn)` and its checkpoint in one transaction, under a savepoint."""
        job = TxJob(workflow_id, epoch, step=step, name=name, fn=fn, started_at=started_at)
        return self._submit(job)

    def complete(
        self, workflow_id: str, epoch: int, status: str, *, output: str | None, error: str | None
    ) -> Future[bool]:
        """Move a workflow to its final status; the future says whether it moved."""
        job = CompleteJob(workflow_id, epoch, status=status, output=output, error=error)
        return self._submit(job)

    def backlog(self) -> int:
        """Jobs queued and not yet taken into a batch."""
        return self._queue.qsize()

    def _submit(self, job: Job) -> Future[Any]:
        with self._lock:
            if self._closed:
                job.future.set_exception(OnceflowError("the engine is shut down"))
            else:
                self._queue.put(job)
        return job.future

    # -- the writer thread ----------------------------------------------------

    def _take(self) -> list[Job]:
        """The jobs queued now (at most max_batch), up to the stop sentinel."""
        batch: list[Job] = []
        job = self._queue.get()
        while job is not None:
            batch.append(job)
            if len(batch) >= self._max_batch:
                return batch
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return batch
        # The sentinel: stop after this batch, even while jobs keep coming.
        self._stop_taken = True
        return batch

    def _loop(self) -> None:
        while not self._stop_taken:
            batch = self._take()
            if batch:
                self._write_until_done(batch)
        self._close()

    def _write_until_done(self, batch: list[Job]) -> None:
        # Postgres down is waited out, never turned into lost work (DESIGN.md §7).
        delay = 0.05
        while True:
            try:
                results = self._write(batch)
            except (*RETRYABLE, DatabaseUnavailableError) as exc:
                self._drop_connection()
                if self._stopping.is_set():
                    self._fail(
                        batch,
                        DatabaseUnavailableError(
                            f"shut down while Postgres was unreachable: {exc}"
                        ),
                    )
                    return
                log.warning(
                    "checkpoint batch of %d failed, retrying in %.2fs: %s", len(batch), delay, exc
                )
                time.sleep(delay)
                delay = min(5.0, delay * 2)
                continue
            except Exception as exc:  # a bug, or user code that broke the connection
                log.exception("checkpoint batch failed")
                self._drop_connection()
                self._fail(batch, exc)
                return
            self.batches += 1
            self.jobs += len(batch)
            for job, result in zip(batch, results, strict=True):
                job.future.set_result(result)
            return

    def _close(self) -> None:
        """Take no more jobs; fail those queued after the stop, so their waiters
        get an error instead of waiting for ever."""
        with self._lock:
            self._closed = True
        left: list[Job] = []
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                left.append(job)
        self._fail(left, OnceflowError("the engine is shut down"))

    def _fail(self, batch: list[Job], exc: BaseException) -> None:
        for job in batch:
            if not job.future.done():
                job.future.set_exception(exc)

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            # Plain tuple rows: this connection is also the one users' transaction
            # steps receive, and they expect psycopg's defaults.
            self._conn = self._db.connect(autocommit=True, dict_rows=False, tagged=True)
        return self._conn

    def _write(self, batch: list[Job]) -> list[Any]:
        conn = self._connection()
        if any(isinstance(j, TxJob) for j in batch):
            try:
                return self._write_optimistic(conn, batch)
            except (_Retry, psycopg.Error) as exc:
                if conn.broken:
                    # The server went away (say a restart killed a step's SQL):
                    # wait it out and write the batch again (_write_until_done).
                    cause = exc.__cause__ if isinstance(exc, _Retry) else exc
                    raise DatabaseUnavailableError(f"connection lost: {cause}") from exc
                # Rolled back; now again, each transaction step isolated.
        return self._write_isolated(conn, batch)

    def _write_optimistic(self, conn: psycopg.Connection[Any], batch: list[Job]) -> list[Any]:
        """The fast path: every transaction step's SQL runs bare, and its
        checkpoint joins the batch's one fenced INSERT. If any step raises or
        any checkpoint is refused, the whole transaction rolls back and the
        batch is written again by `_write_isolated`; users' transaction steps
        hold only SQL, so running one twice inside rolled-back transactions
        has no effect. This saves three round trips per transaction step
        (savepoint, checkpoint, release) in the common case."""
        results: dict[int, Any] = {}
        checkpoints: list[StepJob] = []
        # Pipeline mode: the users' statements are sent without waiting for
        # each answer; the first fetch below waits once for all of them.
        with conn.pipeline(), conn.transaction():
            for job in batch:
                if not isinstance(job, TxJob):
                    continue
                assert job.fn is not None
                try:
                    value = job.fn(conn)
                    output = dumps(value, what="the result of transaction step", name=job.name)
                except Exception as exc:
                    if conn.broken:
                        raise
                    raise _Retry from exc
                results[id(job)] = TxResult(TxVerdict.COMMITTED, value=value)
                checkpoints.append(
                    StepJob(
                        job.workflow_id,
                        job.epoch,
                        step=job.step,
                        name=job.name,
                        output=output,
                        started_at=job.started_at,
                    )
                )
            steps = checkpoints + [j for j in batch if isinstance(j, StepJob)]
            written = self._write_steps(conn, steps)
            if any((c.workflow_id, c.step) not in written for c in checkpoints):
                raise _Retry
            self._record_steps(results, batch, written)
            self._complete(conn, results, batch)
        return [results[id(job)] for job in batch]

    def _write_isolated(self, conn: psycopg.Connection[Any], batch: list[Job]) -> list[Any]:
        results: dict[int, Any] = {}
        with conn.transaction():
            for job in batch:
                if isinstance(job, TxJob):
                    results[id(job)] = self._transaction_step(conn, job)
            steps = [j for j in batch if isinstance(j, StepJob)]
            self._record_steps(results, batch, self._write_steps(conn, steps))
            self._complete(conn, results, batch)
        return [results[id(job)] for job in batch]

    def _write_steps(
        self, conn: psycopg.Connection[Any], steps: list[StepJob]
    ) -> set[tuple[str, int]]:
        if not steps:
            return set()
        rows = [
            {
                "workflow_id": j.workflow_id,
                "step": j.step,
                "name": j.name,
                "output": _fragment(j.output),
                "error": _fragment(j.error),
                "started_at": j.started_at,
                "epoch": j.epoch,
            }
            for j in steps
        ]
        found = conn.execute(self._q["write_steps"], {"rows": _document(rows)}).fetchall()
        return {(wid, step) for wid, step in found}

    @staticmethod
    def _record_steps(
        results: dict[int, Any], batch: list[Job], written: set[tuple[str, int]]
    ) -> None:
        for job in batch:
            if isinstance(job, StepJob):
                results[id(job)] = (job.workflow_id, job.step) in written

    def _complete(
        self, conn: psycopg.Connection[Any], results: dict[int, Any], batch: list[Job]
    ) -> None:
        completes = [j for j in batch if isinstance(j, CompleteJob)]
        if not completes:
            return
        rows = [
            {
                "workflow_id": j.workflow_id,
                "epoch": j.epoch,
                "status": j.status,
                "output": _fragment(j.output),
                "error": _fragment(j.error),
            }
            for j in completes
        ]
        found = conn.execute(self._q["complete_workflows"], {"rows": _document(rows)}).fetchall()
        done = {row[0] for row in found}
        for c in completes:
            results[id(c)] = c.workflow_id in done

    def _transaction_step(self, conn: psycopg.Connection[Any], job: TxJob) -> TxResult:
        assert job.fn is not None
        try:
            # A savepoint per step: one step's failure rolls back only itself,
            # and its effect and its checkpoint commit together or not at all.
            with conn.transaction():
                value = job.fn(conn)
                output = dumps(value, what="the result of transaction step", name=job.name)
                row = conn.execute(
                    self._q["write_transaction_step"],
                    {
                        "workflow_id": job.workflow_id,
                        "epoch": job.epoch,
                        "step": job.step,
                        "name": job.name,
                        "output": output,
                        "started_at": job.started_at,
                    },
                ).fetchone()
                if row is None:
                    raise _Refused
        except _Refused:
            return TxResult(TxVerdict.REFUSED)
        except Exception as exc:
            # Only a lost connection is an outage (the whole batch waits and
            # retries); any other error, even a driver "OperationalError" such as
            # a lock or statement timeout, is this step's own failure.
            if conn.closed or conn.broken:
                raise
            return TxResult(TxVerdict.FAILED, error=exc)
        return TxResult(TxVerdict.COMMITTED, value=value)


def _fragment(json_text: str | None) -> orjson.Fragment | None:
    """JSON already encoded, embedded as is in the batch document."""
    return None if json_text is None else orjson.Fragment(json_text)


def _document(rows: list[dict[str, Any]]) -> str:
    return orjson.dumps(rows).decode()


class _Refused(Exception):
    """Unwinds a transaction step's savepoint when its checkpoint is refused."""


class _Retry(Exception):
    """Unwinds the optimistic write of a batch: write it again step by step."""
