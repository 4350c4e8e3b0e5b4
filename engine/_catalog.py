"""The workflows table as operators see it: one workflow, a listing, its
steps, and cancelling one. Also the reads with retries that runs make of
their own workflow (is it still ours, what did its steps record)."""

from __future__ import annotations

from typing import Any

from ._db import Database, Row
from ._errors import WorkflowNotFoundError
from ._models import Status, StepRecord, WorkflowStatus
from ._rows import step_record, workflow_status
from ._sql import Queries

# Windows of created_at a listing of successes tries, newest first, before
# the whole table. Each reads about the rows created within it, and each is
# four times the one before: a listing reads at most about four times the
# rows it must (while the rows come at a steady rate), and an empty window
# costs a glance at the BRIN index.
LISTING_WINDOWS = (
    "1 minute",
    "4 minutes",
    "15 minutes",
    "1 hour",
    "4 hours",
    "16 hours",
    "3 days",
    "12 days",
    "60 days",
)


class Catalog:
    def __init__(self, db: Database, queries: Queries) -> None:
        self._db = db
        self._q = queries

    def get(self, workflow_id: str) -> WorkflowStatus:
        row = self._db.fetch_one(self._q["get_workflow"], {"workflow_id": workflow_id})
        if row is None:
            raise WorkflowNotFoundError(workflow_id)
        return workflow_status(row)

    def newest(
        self, *, status: Status | str | None, name: str | None, limit: int
    ) -> list[WorkflowStatus]:
        """The `limit` newest workflows (by created_at), of one status and
        name if given.

        Raises:
            ValueError: on an unknown status or a limit below 1.
        """
        st = None if status is None else Status(status).value
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        params: dict[str, Any] = {"status": st, "name": name, "limit": limit}
        # Successes have no B-tree of their own (migrations 0005, 0006): their
        # listings, and those of every status, read the newest rows first,
        # through the BRIN index on created_at, and widen the window only
        # while it holds fewer than `limit` rows. Unfinished workflows are
        # listed through their partial B-tree at once.
        windows = LISTING_WINDOWS if st in (None, Status.SUCCESS.value) else ()
        for window in (*windows, None):
            rows = self._db.fetch_all(self._q["list_workflows"], {**params, "window": window})
            if len(rows) >= limit:
                break
        return [workflow_status(r) for r in rows]

    def steps(self, workflow_id: str) -> list[StepRecord]:
        rows = self._db.fetch_all(self._q["load_steps"], {"workflow_id": workflow_id})
        return [step_record(r) for r in rows]

    def cancel(self, workflow_id: str) -> bool:
        """Cancel a PENDING workflow; False if it had already ended."""
        self.get(workflow_id)  # raises WorkflowNotFoundError
        return (
            self._db.fetch_one(self._q["cancel_workflow"], {"workflow_id": workflow_id}) is not None
        )

    # -- a run's reads of its own workflow: retried through outages ------------

    def step_rows(self, workflow_id: str) -> dict[int, Row]:
        """The recorded steps of a workflow, by number."""
        rows = self._db.retrying(
            lambda: self._db.fetch_all(self._q["load_steps"], {"workflow_id": workflow_id}),
            what="loading steps",
        )
        return {r["step"]: r for r in rows}

    def step_row(self, workflow_id: str, step: int) -> Row | None:
        return self._db.retrying(
            lambda: self._db.fetch_one(
                self._q["get_step"], {"workflow_id": workflow_id, "step": step}
            ),
            what="reading a step",
        )

    def holds(self, workflow_id: str, epoch: int) -> bool:
        """Whether a run at `epoch` still holds the workflow (PENDING, not claimed since)."""
        st = self._db.retrying(lambda: self.get(workflow_id), what="reading a workflow")
        return st.status is Status.PENDING and st.epoch == epoch
