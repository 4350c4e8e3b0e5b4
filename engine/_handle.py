"""WorkflowHandle: a started workflow, to wait for its result or read its status."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._errors import WorkflowCancelledError, WorkflowFailedError
from ._models import Status, WorkflowStatus
from ._runner import Outcome

if TYPE_CHECKING:
    from ._engine import Engine

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
