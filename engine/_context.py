"""What user code can ask about where it runs: the workflow ID, the step's key."""

from __future__ import annotations

from concurrent.futures import Future
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._errors import OnceflowError

if TYPE_CHECKING:
    from ._engine import Engine
    from ._inline import InlineBatch


@dataclass(slots=True)
class WorkflowContext:
    engine: Engine
    workflow_id: str
    epoch: int
    # Recorded steps by number, loaded once when the run starts.
    recorded: dict[int, dict[str, Any]] = field(default_factory=dict)
    next_step: int = 1
    # The number of the step running now, 0 between steps: a step called
    # inside a step is an ordinary call, and step_idempotency_key() reads it
    # (on the writer's thread too, for a transaction step run there).
    step: int = 0
    # The last plain-step checkpoint, written behind the workflow.
    behind: Future[bool] | None = None
    # Set when the workflow runs inside the transaction recording it (_inline.py).
    inline: InlineBatch | None = None


_workflow: ContextVar[WorkflowContext | None] = ContextVar("onceflow_workflow", default=None)


def current() -> WorkflowContext | None:
    return _workflow.get()


def current_workflow_id() -> str:
    """The ID of the workflow this code runs in.

    Raises:
        OnceflowError: when called outside a workflow.
    """
    ctx = _workflow.get()
    if ctx is None:
        raise OnceflowError("current_workflow_id() was called outside a workflow")
    return ctx.workflow_id


def step_idempotency_key() -> str:
    """`f"{workflow_id}:{step_number}"` for the step this code runs in.

    Pass it to outside systems: a plain step may run more than once (it is
    at-least-once), and this key is the same every time it does.
    """
    ctx = _workflow.get()
    if ctx is None or not ctx.step:
        raise OnceflowError("step_idempotency_key() was called outside a step of a workflow")
    return f"{ctx.workflow_id}:{ctx.step}"
