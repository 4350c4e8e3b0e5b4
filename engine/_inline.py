"""Inline runs: fresh workflows run to completion inside the transaction that
records them.

For handlers that are quick (no slow calls to the outside world), the cost of
a workflow is its bookkeeping, not its work: handing it to a worker thread,
waiting for a group commit per transaction step and for its completion. An
inline batch instead runs, in the recording thread and in offset order, each
chosen workflow of the batch; plain steps run and queue their checkpoint
rows, transaction steps run their SQL on the recording transaction, and the
checkpoints are written with the workflow rows themselves: one Postgres
transaction, one commit, for the whole batch.

The batch first looks up which of its workflows exist; only the others run.
Their rows are then inserted already final (SUCCESS, with their output): no
PENDING row, no completing UPDATE (which would add an entry to every index of
the table). The rest of the batch goes in PENDING (or ERROR), `ON CONFLICT DO
NOTHING`. A workflow run here whose row another executor inserted meanwhile
was not ours to run: its insert fails, the whole batch rolls back, its
transaction steps' effects with it, and goes the ordinary way, which finds
that row (exactly once, DESIGN.md §1.2, §1.5).

Everything up to the COMMIT is sent without waiting (`send_batch`); the
caller reads the answers later (`SentBatch.finish`), so that the consumer
can fetch and decode its next batch while Postgres commits this one.

The guarantee is unchanged (DESIGN.md §1): the rows, the effects of
transaction steps and the completions commit together or not at all, and
only after that commit may the source acknowledge the batch. A crash before
it loses nothing: the source redelivers and the batch runs again, so plain
steps ran at least once, as always. A workflow that raises aborts the inline
attempt: the transaction rolls back and the batch is recorded the ordinary
way, where steps retry with backoff and failures are recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
import psycopg

from ._context import WorkflowContext, _workflow
from ._deferred import DeferringConnection
from ._lookup import Found, lookup_params
from ._models import NewWorkflow
from ._multirow import Tables
from ._serialize import dumps

if TYPE_CHECKING:
    from ._engine import Engine
    from ._registry import StepSpec

# Decides, in batch order, which workflows run inline: called with each item
# not already final, and whether it is fresh (not recorded yet: only those
# can run inline). A policy with a method `ran(item, seconds)` is told how long
# each inline run took (its handler's time, not the batch's SQL).
InlinePolicy = Callable[[NewWorkflow, bool], bool]


class InlineAbort(Exception):
    """A workflow raised during an inline batch; the batch goes the ordinary way."""


@dataclass
class InlineBatch:
    """The rows an inline batch writes at its end."""

    conn: psycopg.Connection[Any]
    tables: Tables
    # Whether step checkpoints are written (Engine's `inline_steps`). A
    # workflow run inline ends in the transaction that records it, so nothing
    # ever replays its steps: by default only its row and output are kept.
    keep_steps: bool = False
    # What transaction steps get as their connection: their writes go out in runs.
    deferred: DeferringConnection = field(init=False)
    steps: list[dict[str, Any]] = field(default_factory=list)
    # Result (JSON) of each workflow run to completion, by workflow ID.
    outputs: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.deferred = DeferringConnection(self.conn, self.tables)

    def step(self, ctx: WorkflowContext, number: int, name: str, output: str) -> None:
        if not self.keep_steps:
            return
        self.steps.append(
            {
                "workflow_id": ctx.workflow_id,
                "step": number,
                "name": name,
                "output": orjson.Fragment(output),
                "started_at": datetime.now(UTC),
            }
        )


def run_step(
    ctx: WorkflowContext,
    number: int,
    spec: StepSpec,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Step `number` of an inline run (ctx.inline): no retries, a failure
    aborts the batch. Every step of every inline workflow comes here, so it
    does no more than it must."""
    batch = ctx.inline
    assert batch is not None
    ctx.step = number
    try:
        value = spec.fn(*args, **kwargs)
        # Encoded even when not kept, so that a result the ordinary way could
        # not checkpoint fails here too; None, a bool, a float or an int of
        # up to 64 bits always can.
        if batch.keep_steps or not _always_encodable(value):
            output = dumps(value, what="the result of step", name=spec.name)
            if batch.keep_steps:
                batch.step(ctx, number, spec.name, output)
    except Exception as exc:
        raise InlineAbort(f"step {spec.name!r} raised {type(exc).__name__}") from exc
    finally:
        ctx.step = 0
    return value


def _always_encodable(value: Any) -> bool:
    kind = type(value)
    if kind is int:
        return bool(-(2**63) <= value < 2**64)  # orjson's range
    return value is None or kind is bool or kind is float


# Sends the insert of rows: (connection, rows, outputs of those run here, by
# workflow ID, or None for rows not run here); for rows not run here, the
# cursor whose rows are the IDs inserted (an existing row is skipped).
Insert = Callable[
    [psycopg.Connection[Any], Sequence[NewWorkflow], "dict[str, str] | None"],
    "psycopg.Cursor[Any] | None",
]

# Workflows run between two sends of their rows and effects. Pipeline mode
# sends without waiting, so Postgres writes one chunk while this thread runs
# the next: the two cores work at once instead of in turn.
CHUNK = 64


@dataclass
class SentBatch:
    """An inline batch sent to Postgres up to its COMMIT, in pipeline mode:
    nothing of it is known to be durable until the pipeline's answers are
    read (`finish`, by the caller that owns the pipeline)."""

    state: InlineBatch
    # The inserts of rows not run here: their answers say which were new.
    pending: list[psycopg.Cursor[Any]]

    def finish(self) -> tuple[set[str], set[str]]:
        """(inserted, completed), once Postgres answered; a psycopg error if
        any statement of the batch failed (the COMMIT then did nothing)."""
        inserted = {row[0] for cur in self.pending for row in cur.fetchall()}
        completed = set(self.state.outputs)
        return inserted | completed, completed


def send_batch(
    engine: Engine,
    conn: psycopg.Connection[Any],
    batch: Sequence[NewWorkflow],
    policy: InlinePolicy,
    insert: Insert,
    found: Found | None = None,
) -> SentBatch:
    """Record `batch` and run the workflows `policy` picks, in one
    transaction, sent up to its COMMIT without waiting (`conn` is in
    pipeline mode). `found`: which of its workflows exist, if asked already
    (_lookup.py); else the batch asks first. Raises InlineAbort, with the
    transaction rolled back, when a workflow raises.
    """
    state = InlineBatch(conn, engine._tables, keep_steps=engine.settings.inline_steps)
    timed: Callable[[NewWorkflow, float], None] | None = getattr(policy, "ran", None)
    pending: list[psycopg.Cursor[Any]] = []
    # BEGIN and COMMIT go out as statements of the pipeline: psycopg's
    # transaction() would open a nested pipeline, whose exit syncs and waits
    # for every answer of the batch, and again for the COMMIT's.
    conn.execute("BEGIN")
    if found is None:
        ids = [item.workflow_id for item in batch]
        found = conn.execute(engine._q["existing_workflows"], lookup_params(ids)).fetchall()
    existing = {row[0] for row in found}
    final = {row[0] for row in found if row[1]}
    outputs = state.outputs
    workflows: dict[str, Callable[..., Any]] = {}
    chunk: list[NewWorkflow] = []
    for item in batch:
        wid = item.workflow_id
        if wid in final:
            # Redelivered and done: nothing to run, nothing it holds up.
            # Not shown to the policy, which would hold its key's later
            # records back from running inline.
            continue
        fresh = wid not in existing and item.failure is None
        if policy(item, fresh) and fresh:
            fn = workflows.get(item.name)
            if fn is None:
                fn = workflows[item.name] = _registered(engine, item.name)
            if timed is None:
                outputs[wid] = _run_workflow(engine, state, item, fn)
            else:
                started = time.perf_counter()
                outputs[wid] = _run_workflow(engine, state, item, fn)
                timed(item, time.perf_counter() - started)
        if wid not in existing:
            chunk.append(item)
        if len(chunk) >= CHUNK:
            _send_chunk(engine, state, chunk, insert, pending)
            chunk = []
    _send_chunk(engine, state, chunk, insert, pending)
    # The exactly-once check is Postgres's: a workflow run here that another
    # executor inserted since the lookup above makes the insert of its
    # finished row fail, and the COMMIT then does nothing. The ordinary path
    # finds that row (DESIGN.md §1.2, §1.5).
    conn.execute("COMMIT")
    return SentBatch(state, pending)


def _send_chunk(
    engine: Engine,
    state: InlineBatch,
    chunk: Sequence[NewWorkflow],
    insert: Insert,
    pending: list[psycopg.Cursor[Any]],
) -> None:
    """Send what a chunk of the batch wrote (its transaction steps' statements,
    then its rows: those run here already final, so no PENDING row and no
    completing UPDATE) and go on without waiting for Postgres."""
    state.deferred.flush()
    done = [item for item in chunk if item.workflow_id in state.outputs]
    if done:
        insert(state.conn, done, state.outputs)
    if len(done) < len(chunk):
        rest = [item for item in chunk if item.workflow_id not in state.outputs]
        cur = insert(state.conn, rest, None)
        if cur is not None:
            pending.append(cur)
    if state.steps:
        state.conn.execute(
            engine._q["insert_inline_steps"], {"rows": orjson.dumps(state.steps).decode()}
        )
        state.steps.clear()


def _registered(engine: Engine, name: str) -> Callable[..., Any]:
    try:
        return engine._registry.workflow(name).fn
    except Exception as exc:  # an unknown name: the ordinary way records why
        raise InlineAbort(f"workflow {name!r}: {exc!r}") from exc


def _run_workflow(
    engine: Engine, state: InlineBatch, item: NewWorkflow, fn: Callable[..., Any]
) -> str:
    """Run one fresh workflow (`fn`, its registered function) to its end;
    its result as JSON."""
    ctx = WorkflowContext(engine, item.workflow_id, 1, inline=state)
    token = _workflow.set(ctx)
    try:
        value = fn(*item.args, **item.kwargs)
        if value is None:  # the usual result of a handler
            return "null"
        return dumps(value, what="the result of workflow", name=item.name)
    except InlineAbort:
        raise
    except Exception as exc:
        raise InlineAbort(f"workflow {item.workflow_id} raised {exc!r}") from exc
    finally:
        _workflow.reset(token)
