"""Inline runs: fresh workflows run to completion inside the transaction that
records them.

For handlers that are quick (no slow calls to the outside world), the cost of
a workflow is its bookkeeping, not its work: handing it to a worker thread,
waiting for a group commit per transaction step and for its completion. An
inline batch instead runs, in the recording thread and in offset order, each
chosen workflow of the batch; plain steps run and queue their checkpoint
rows, transaction steps run their SQL on the recording transaction, and the
checkpoints and completions are written with the workflow rows themselves:
one Postgres transaction, one commit, for the whole batch.

The guarantee is unchanged (DESIGN.md §1): the rows, the effects of
transaction steps and the completions commit together or not at all, and
only after that commit may the source acknowledge the batch. A crash before
it loses nothing: the source redelivers and the batch runs again, so plain
steps ran at least once, as always. A workflow that raises aborts the inline
attempt: the transaction rolls back and the batch is recorded the ordinary
way, where steps retry with backoff and failures are recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
import psycopg

from ._context import WorkflowContext, _step, _workflow
from ._errors import OnceflowError
from ._models import NewWorkflow
from ._serialize import dumps

if TYPE_CHECKING:
    from ._engine import Engine

# Decides, in batch order, which workflows run inline: called with each item
# and whether it was inserted just now (only fresh ones can run inline).
InlinePolicy = Callable[[NewWorkflow, bool], bool]


class InlineAbort(Exception):
    """A workflow raised during an inline batch; the batch goes the ordinary way."""


@dataclass
class InlineBatch:
    """The rows an inline batch writes at its end."""

    conn: psycopg.Connection[Any]
    steps: list[dict[str, Any]] = field(default_factory=list)
    completions: list[dict[str, Any]] = field(default_factory=list)

    def step(self, ctx: WorkflowContext, number: int, name: str, output: str) -> None:
        self.steps.append(
            {
                "workflow_id": ctx.workflow_id,
                "step": number,
                "name": name,
                "output": orjson.Fragment(output),
                "error": None,
                "started_at": datetime.now(UTC),
                "epoch": ctx.epoch,
            }
        )


def run_step(
    ctx: WorkflowContext, batch: InlineBatch, number: int, name: str, call: Callable[[], Any]
) -> Any:
    """One step of an inline run: no retries (a failure aborts the batch)."""
    token = _step.set(number)
    ctx.in_step = True
    try:
        value = call()
        output = dumps(value, what=f"the result of step {name!r}")
    except Exception as exc:
        raise InlineAbort(f"step {name!r} raised {type(exc).__name__}") from exc
    finally:
        ctx.in_step = False
        _step.reset(token)
    batch.step(ctx, number, name, output)
    return value


def run_batch(
    engine: Engine,
    conn: psycopg.Connection[Any],
    batch: Sequence[NewWorkflow],
    policy: InlinePolicy,
    insert: Callable[[psycopg.Connection[Any]], set[str]],
) -> tuple[set[str], set[str]]:
    """Record `batch` and run the workflows `policy` picks, in one transaction.

    Returns (inserted, completed). Raises InlineAbort, with everything rolled
    back, when a workflow raises.
    """
    state = InlineBatch(conn)
    with conn.transaction():
        inserted = insert(conn)
        completed: set[str] = set()
        for item in batch:
            fresh = item.workflow_id in inserted and item.failure is None
            if not policy(item, fresh) or not fresh:
                continue
            wf = engine._registry.workflow(item.name)
            ctx = WorkflowContext(engine, item.workflow_id, 1, inline=state)
            token = _workflow.set(ctx)
            try:
                value = wf.fn(*item.args, **item.kwargs)
                output = dumps(value, what=f"the result of workflow {item.name!r}")
            except InlineAbort:
                raise
            except Exception as exc:
                raise InlineAbort(f"workflow {item.workflow_id} raised {exc!r}") from exc
            finally:
                _workflow.reset(token)
            state.completions.append(
                {
                    "workflow_id": item.workflow_id,
                    "epoch": 1,
                    "status": "SUCCESS",
                    "output": orjson.Fragment(output),
                    "error": None,
                }
            )
            completed.add(item.workflow_id)
        if state.steps:
            written = conn.execute(
                engine._q["write_steps"], {"rows": orjson.dumps(state.steps).decode()}
            ).fetchall()
            if len(written) != len(state.steps):
                raise OnceflowError("inline checkpoints were refused on rows inserted just now")
        if state.completions:
            conn.execute(
                engine._q["complete_workflows"],
                {"rows": orjson.dumps(state.completions).decode()},
            )
    return inserted, completed
