"""Database rows to and from the engine's models: the JSON document a batch
of workflows is inserted as, and the claimed, status and step records read
back from rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from ._db import Row
from ._errors import SerializationError
from ._models import Claimed, NewWorkflow, Source, Status, StepRecord, WorkflowStatus
from ._serialize import dumps, encode, revive


def batch_document(
    batch: Sequence[NewWorkflow],
    outputs: dict[str, str] | None = None,
    *,
    keep_inputs: bool = True,
) -> str:
    """A batch of workflow rows as one JSON document (see insert_workflows):
    PENDING, or ERROR for a failure, or SUCCESS for those in `outputs` (their
    results as JSON, by workflow ID: run inline before their row is written).
    Without `keep_inputs`, the rows in `outputs` go without their input
    (null): nothing will run them again (Engine's `inline_inputs`).

    Each row is an array, its fields in the order of ROW_FIELDS: Postgres
    takes an array's elements by position faster than an object's by name
    (no keys to parse or look up), about a quarter less of its CPU per row
    in jsonb_to_recordset's place (bench/README.md)."""
    outputs = outputs or {}
    # The whole document in one encoding; only when that fails (or holds a
    # NUL) is each input encoded on its own, to name the workflow at fault.
    if outputs and not keep_inputs and all(i.workflow_id in outputs for i in batch):
        # An inline batch's finished rows, the bulk of them: no input.
        rows = [_finished_row(item, outputs[item.workflow_id]) for item in batch]
    else:
        drop = () if keep_inputs else outputs
        rows = [
            _row(
                item,
                None if item.workflow_id in drop else {"args": item.args, "kwargs": item.kwargs},
                outputs,
            )
            for item in batch
        ]
    document = encode(rows)
    if document is not None:
        return document
    return orjson.dumps(
        [
            _row(
                item,
                None
                if item.workflow_id in drop
                else orjson.Fragment(dumps(_input(item), what="the input of", name=item.name)),
                outputs,
            )
            for item in batch
        ]
    ).decode()


# The fields of a row of batch_document, by position (queries.sql reads them so).
ROW_FIELDS = (
    "workflow_id",
    "name",
    "input",
    "status",
    "output",
    "error",
    "source_group",
    "source_topic",
    "source_partition",
    "source_offset",
    "ordering_key",
)


def _input(item: NewWorkflow) -> dict[str, Any]:
    return {"args": list(item.args), "kwargs": item.kwargs}


def _row(item: NewWorkflow, payload: Any, outputs: dict[str, str]) -> list[Any]:
    src = item.source
    output = outputs.get(item.workflow_id)
    row = [
        item.workflow_id,
        item.name,
        payload,
        _initial_status(item, output),
        None if output is None else orjson.Fragment(output),
        item.failure,
    ]
    if src is None:
        row += (None, None, None, None, None)
    else:
        row += (src.group, src.topic, src.partition, src.offset, src.ordering_key)
    return row


def _finished_row(item: NewWorkflow, output: str) -> list[Any]:
    """_row of a workflow run inline, kept without its input."""
    src = item.source
    if src is None:
        return [item.workflow_id, item.name, None, "SUCCESS", orjson.Fragment(output), None,
                None, None, None, None, None]  # fmt: skip
    return [item.workflow_id, item.name, None, "SUCCESS", orjson.Fragment(output), None,
            src.group, src.topic, src.partition, src.offset, src.ordering_key]  # fmt: skip


def _initial_status(item: NewWorkflow, output: str | None) -> str:
    if output is not None:
        return "SUCCESS"
    return "PENDING" if item.failure is None else "ERROR"


def claimed_from_row(row: Row) -> Claimed:
    data = revive(row["input"])
    return Claimed(
        row["workflow_id"],
        row["name"],
        row["epoch"],
        tuple(data["args"]),
        dict(data["kwargs"]),
        row.get("source_offset"),
    )


def shown(stored: Any) -> Any:
    """Stored JSON revived for display; as stored if it names a model that is
    gone, so that a workflow parked for that reason can still be inspected."""
    try:
        return revive(stored)
    except SerializationError:
        return stored


def workflow_status(row: Row) -> WorkflowStatus:
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
        input=shown(row["input"]),
        output=shown(row["output"]),
        error=row["error"],
        owner=row["owner"],
        epoch=row["epoch"],
        attempts=row["attempts"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        source=source,
    )


def step_record(row: Row) -> StepRecord:
    return StepRecord(
        row["step"],
        row["name"],
        shown(row["output"]),
        row["error"],
        row["started_at"],
        row["finished_at"],
    )
