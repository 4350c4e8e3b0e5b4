"""The JSON document a batch of workflow rows is inserted as (engine/_rows.py):
encoded in one pass, and, when that pass fails, input by input so that the
error names the workflow at fault."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from engine import NewWorkflow, SerializationError, Source
from engine._rows import ROW_FIELDS, batch_document


def _rows(document: str) -> list[dict[str, Any]]:
    """The document's rows, each an array of ROW_FIELDS, by field name."""
    rows = orjson.loads(document)
    assert all(len(row) == len(ROW_FIELDS) for row in rows)
    return [dict(zip(ROW_FIELDS, row, strict=True)) for row in rows]


def _batch(*args: object) -> list[NewWorkflow]:
    return [
        NewWorkflow(f"wf-{i}", "flow", (arg,), source=Source("g", "t", 0, i, "k"))
        for i, arg in enumerate(args)
    ]


def test_rows_carry_input_status_output_and_source() -> None:
    bad = NewWorkflow("wf-bad", "flow", (), failure={"type": "BadRecord", "message": "no"})
    batch = [*_batch({"n": 1}, b"\x01raw"), bad]

    rows = _rows(batch_document(batch, {"wf-0": '{"done": true}'}))

    assert [(r["workflow_id"], r["status"]) for r in rows] == [
        ("wf-0", "SUCCESS"),
        ("wf-1", "PENDING"),
        ("wf-bad", "ERROR"),
    ]
    assert rows[0]["input"] == {"args": [{"n": 1}], "kwargs": {}}
    assert rows[0]["output"] == {"done": True}
    assert rows[1]["input"]["args"][0] == {"__onceflow_bytes__": "AXJhdw=="}
    assert rows[1]["output"] is None
    assert (rows[1]["source_topic"], rows[1]["source_offset"], rows[1]["ordering_key"]) == (
        "t",
        1,
        "k",
    )
    assert rows[2]["error"] == {"type": "BadRecord", "message": "no"}
    assert rows[2]["source_group"] is None


def test_without_keep_inputs_only_the_rows_run_inline_lose_their_input() -> None:
    batch = _batch({"n": 0}, {"n": 1})

    rows = _rows(batch_document(batch, {"wf-0": "0"}, keep_inputs=False))

    assert [(r["status"], r["input"], r["output"]) for r in rows] == [
        ("SUCCESS", None, 0),
        ("PENDING", {"args": [{"n": 1}], "kwargs": {}}, None),
    ]
    assert rows[0]["source_offset"] == 0  # where its record is stays known


def test_a_batch_all_run_inline_has_the_same_rows_but_their_inputs() -> None:
    batch = [*_batch({"n": 0}, {"n": 1}), NewWorkflow("wf-free", "flow", (2,))]
    outputs = {"wf-0": "0", "wf-1": '{"ok": 1}', "wf-free": "null"}

    kept = _rows(batch_document(batch, outputs))
    dropped = _rows(batch_document(batch, outputs, keep_inputs=False))

    assert [r["input"] for r in dropped] == [None, None, None]
    assert dropped == [{**r, "input": None} for r in kept]
    assert [r["status"] for r in dropped] == ["SUCCESS"] * 3


@pytest.mark.parametrize("bad", [object(), "nul \x00 inside"], ids=["object", "nul"])
def test_an_input_that_cannot_be_stored_is_named(bad: object) -> None:
    with pytest.raises(SerializationError, match="the input of 'flow'"):
        batch_document(_batch("fine", bad))


def test_a_literal_backslash_u0000_is_not_a_nul() -> None:
    rows = _rows(batch_document(_batch("\\u0000 is six characters")))
    assert rows[0]["input"]["args"] == ["\\u0000 is six characters"]
