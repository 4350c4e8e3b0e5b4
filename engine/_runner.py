"""Running workflows: the worker threads, replay, steps, completion.

A run loads the workflow's recorded steps once, then calls the user's
function with a context; each step either replays its recorded result or
runs and is checkpointed through the group-commit writer before the
workflow goes on (DESIGN.md §1.4, §4 step 6).
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
import psycopg

from . import _inline
from ._context import WorkflowContext, _workflow
from ._errors import (
    NonDeterministicWorkflowError,
    OnceflowError,
    StepError,
    WorkflowFencedError,
)
from ._jobs import TxVerdict
from ._models import Claimed, Status
from ._registry import StepSpec
from ._serialize import dumps, revive

if TYPE_CHECKING:
    from ._engine import Engine

log = logging.getLogger("onceflow.runner")

# Transient database conflicts a transaction step retries by itself.
_TX_RETRYABLE = (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected)


@dataclass(frozen=True)
class Outcome:
    """How a run ended in this process."""

    workflow_id: str
    status: Status | None  # None: the run was fenced off and left to its new owner
    output_json: str | None = None
    error: dict[str, str] | None = None

    def output(self) -> Any:
        return None if self.output_json is None else revive(orjson.loads(self.output_json))


def error_record(exc: BaseException) -> dict[str, str]:
    # NUL shown as "\x00": Postgres cannot store it, and the record must be stored.
    return {
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": str(exc).replace("\x00", "\\x00"),
        "traceback": "".join(traceback.format_exception(exc)).replace("\x00", "\\x00"),
    }


class WorkerPool:
    """Daemon worker threads fed by one queue.

    Daemon threads, not a ThreadPoolExecutor: a user step stuck in I/O must not
    keep the process from exiting on shutdown; its workflow stays PENDING and
    is recovered, which is exactly what a crash would do.
    """

    def __init__(self, workers: int) -> None:
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"onceflow-worker-{i}", daemon=True)
            for i in range(workers)
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[[], None]) -> None:
        self._queue.put(fn)

    def stop(self) -> None:
        for _ in self._threads:
            self._queue.put(None)

    def _work(self) -> None:
        while (fn := self._queue.get()) is not None:
            try:
                fn()
            except BaseException:  # never lose a worker to one bad run
                log.exception("workflow run crashed")


class Runner:
    def __init__(self, engine: Engine, workers: int) -> None:
        self._engine = engine
        self._pool = WorkerPool(workers)
        self._lock = threading.Lock()
        self._active: dict[str, Future[Outcome]] = {}
        self.idle = threading.Condition(self._lock)

    def start(self) -> None:
        self._pool.start()

    def stop(self) -> None:
        self._pool.stop()

    def active_count(self) -> int:
        with self._lock:
            return len(self._active)

    def is_active(self, workflow_id: str) -> bool:
        with self._lock:
            return workflow_id in self._active

    def future(self, workflow_id: str) -> Future[Outcome] | None:
        with self._lock:
            return self._active.get(workflow_id)

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._active:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.idle.wait(left)
        return True

    def submit(self, claimed: Claimed, *, fresh: bool = False) -> Future[Outcome]:
        """Run a workflow this executor owns. One run per workflow at a time.

        `fresh` says the workflow was inserted just now, so it has no recorded
        steps to load.
        """
        with self._lock:
            running = self._active.get(claimed.workflow_id)
            if running is not None:
                return running
            fut: Future[Outcome] = Future()
            self._active[claimed.workflow_id] = fut
        self._pool.submit(lambda: self._run(claimed, fresh, fut))
        return fut

    def _run(self, claimed: Claimed, fresh: bool, fut: Future[Outcome]) -> None:
        try:
            outcome = self._execute(claimed, fresh)
        except BaseException as exc:
            outcome = Outcome(claimed.workflow_id, None, error=error_record(exc))
            log.exception("run of workflow %s failed outside the workflow", claimed.workflow_id)
        with self._lock:
            del self._active[claimed.workflow_id]
            if not self._active:
                self.idle.notify_all()
        fut.set_result(outcome)

    def _execute(self, claimed: Claimed, fresh: bool) -> Outcome:
        eng = self._engine
        wf = eng._registry.workflow(claimed.name)
        recorded = {} if fresh else eng._catalog.step_rows(claimed.workflow_id)
        ctx = WorkflowContext(eng, claimed.workflow_id, claimed.epoch, recorded)
        token = _workflow.set(ctx)
        try:
            value = wf.fn(*claimed.args, **claimed.kwargs)
            output = dumps(value, what="the result of workflow", name=claimed.name)
        except WorkflowFencedError:
            return _fenced(claimed.workflow_id, "a checkpoint")
        except Exception as exc:
            return self._finish(ctx, Status.ERROR, None, error_record(exc))
        finally:
            _workflow.reset(token)
        return self._finish(ctx, Status.SUCCESS, output, None)

    def _finish(
        self, ctx: WorkflowContext, status: Status, output: str | None, error: dict[str, str] | None
    ) -> Outcome:
        error_json = None if error is None else orjson.dumps(error).decode()
        moved = (
            ctx.engine._writer_for(ctx.workflow_id)
            .complete(ctx.workflow_id, ctx.epoch, status.value, output=output, error=error_json)
            .result()
        )
        if moved:
            return Outcome(ctx.workflow_id, status, output, error)
        # Not moved. Final at our epoch (a retried commit that had landed, or a
        # cancel): what the database holds is the outcome. Else we were fenced.
        st = ctx.engine.get_workflow(ctx.workflow_id)
        if st.status.is_final and st.epoch == ctx.epoch:
            out = None if st.output is None else dumps(st.output)
            return Outcome(ctx.workflow_id, st.status, out, st.error)
        # A run that lost the workflow after its last step (frozen while its
        # completion was queued, say) is as fenced as one stopped mid-way.
        return _fenced(ctx.workflow_id, "its completion")


def _fenced(workflow_id: str, refused: str) -> Outcome:
    log.info("workflow %s was taken over by another executor: %s was refused", workflow_id, refused)
    return Outcome(workflow_id, None)


# -- steps, called from inside user workflow code ------------------------------


def call_step(spec: StepSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    ctx = _workflow.get()
    if ctx is None or ctx.step:
        # Outside a workflow, or a step inside a step: an ordinary call.
        return _with_retries(spec, lambda: spec.fn(*args, **kwargs))
    number = ctx.next_step
    ctx.next_step = number + 1
    if ctx.inline is not None:
        return _inline.run_step(ctx, number, spec, args, kwargs)
    recorded = ctx.recorded.get(number)
    if recorded is not None:
        return _replay(ctx, number, spec.name, recorded)
    _check_behind(ctx)
    started = datetime.now(UTC)
    ctx.step = number
    try:
        value = _with_retries(spec, lambda: spec.fn(*args, **kwargs))
        output = dumps(value, what="the result of step", name=spec.name)
    except Exception as exc:
        _checkpoint(ctx, number, spec.name, None, error_record(exc), started)
        raise
    finally:
        ctx.step = 0
    # Written behind the workflow: it goes on without waiting. The writer
    # commits a workflow's writes in order, so nothing after this step (a
    # transaction step, the completion) can be durable before this checkpoint
    # is; a crash before it only re-runs this plain step, which is
    # at-least-once by contract (DESIGN.md §1.4).
    writer = ctx.engine._writer_for(ctx.workflow_id)
    ctx.behind = writer.write_step(
        ctx.workflow_id,
        ctx.epoch,
        number,
        spec.name,
        output=output,
        error=None,
        started_at=started,
    )
    if writer.backlog() > _MAX_BEHIND:
        # Bounded memory: when checkpoints queue faster than they commit,
        # wait for this one like a transaction step would.
        ctx.behind.result()
    return value


_MAX_BEHIND = 20_000


def _check_behind(ctx: WorkflowContext) -> None:
    """Stop before the next step if the last checkpoint written behind us was
    refused and the workflow is no longer ours (claimed or cancelled). Costs
    nothing while that checkpoint is still queued or was written."""
    behind = ctx.behind
    if behind is None or not behind.done():
        return
    ctx.behind = None
    refused = behind.exception() is None and not behind.result()
    if refused and not ctx.engine._catalog.holds(ctx.workflow_id, ctx.epoch):
        raise WorkflowFencedError(ctx.workflow_id, ctx.epoch)


def call_transaction(
    engine: Engine, spec: StepSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    ctx = _workflow.get()
    if ctx is None or ctx.step:
        # Outside a workflow: the same SQL in a transaction of its own, no checkpoint.
        # A rare path, so a connection of its own rather than a pooled one
        # (users' transaction steps get psycopg's default tuple rows).
        with engine._db.connect(dict_rows=False) as conn, conn.transaction():
            return spec.fn(conn, *args, **kwargs)
    number = ctx.next_step
    ctx.next_step = number + 1
    inline = ctx.inline
    if inline is not None:
        inline.deferred.begin_step()
        return _inline.run_step(ctx, number, spec, (inline.deferred, *args), kwargs)
    recorded = ctx.recorded.get(number)
    if recorded is not None:
        return _replay(ctx, number, spec.name, recorded)
    _check_behind(ctx)
    started = datetime.now(UTC)
    writer = ctx.engine._writer_for(ctx.workflow_id)
    attempt = 0
    # The function runs on the writer's thread, which does not inherit this
    # thread's context: hand it this one, so that current_workflow_id() and
    # step_idempotency_key() (ctx.step) work inside transaction steps too.
    step_context = contextvars.copy_context()
    while True:
        ctx.step = number
        try:
            result = writer.run_transaction(
                ctx.workflow_id,
                ctx.epoch,
                number,
                spec.name,
                lambda conn: step_context.run(spec.fn, conn, *args, **kwargs),
                started,
            ).result()
        finally:
            ctx.step = 0
        if result.verdict is TxVerdict.COMMITTED:
            return result.value
        if result.verdict is TxVerdict.REFUSED:
            return _adopt(ctx, number, spec.name)
        assert result.error is not None
        attempt += 1
        transient = isinstance(result.error, _TX_RETRYABLE)
        if attempt <= spec.retry.retries or (transient and attempt <= 10):
            time.sleep(spec.retry.delay(attempt))
            continue
        _checkpoint(ctx, number, spec.name, None, error_record(result.error), started)
        raise result.error


_WRITTEN = object()


def _checkpoint(
    ctx: WorkflowContext,
    number: int,
    name: str,
    output: str | None,
    error: dict[str, str] | None,
    started: datetime,
) -> Any:
    """Write a step's checkpoint and wait; if refused, adopt what the database holds."""
    error_json = None if error is None else orjson.dumps(error).decode()
    written = (
        ctx.engine._writer_for(ctx.workflow_id)
        .write_step(
            ctx.workflow_id,
            ctx.epoch,
            number,
            name,
            output=output,
            error=error_json,
            started_at=started,
        )
        .result()
    )
    if written:
        return _WRITTEN
    if error is not None:
        # A failure that could not be recorded: the workflow is lost to us anyway.
        raise WorkflowFencedError(ctx.workflow_id, ctx.epoch)
    return _adopt(ctx, number, name)


def _adopt(ctx: WorkflowContext, number: int, name: str) -> Any:
    """A checkpoint was refused. If this run still holds the workflow and the
    step is recorded, our own commit had landed before a retry: go on with the
    record. Otherwise another executor took the workflow (or it was
    cancelled): stop at once, running none of its steps again."""
    if not ctx.engine._catalog.holds(ctx.workflow_id, ctx.epoch):
        raise WorkflowFencedError(ctx.workflow_id, ctx.epoch)
    row = ctx.engine._catalog.step_row(ctx.workflow_id, number)
    if row is None:
        raise WorkflowFencedError(ctx.workflow_id, ctx.epoch)
    return _replay(ctx, number, name, row)


def _replay(ctx: WorkflowContext, number: int, name: str, row: dict[str, Any]) -> Any:
    if row["name"] != name:
        raise NonDeterministicWorkflowError(ctx.workflow_id, number, row["name"], name)
    if row["error"] is not None:
        raise StepError(name, row["error"])
    return revive(row["output"])


def _with_retries(spec: StepSpec, call: Callable[[], Any]) -> Any:
    attempt = 0
    while True:
        try:
            return call()
        except OnceflowError:
            raise
        except Exception as exc:
            attempt += 1
            if attempt > spec.retry.retries:
                raise
            delay = spec.retry.delay(attempt)
            log.info(
                "step %s failed (%s: %s); retry %d/%d in %.2fs",
                spec.name,
                type(exc).__name__,
                exc,
                attempt,
                spec.retry.retries,
                delay,
            )
            time.sleep(delay)
