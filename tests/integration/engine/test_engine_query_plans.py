"""The checkpoint writer's statements find a batch's workflows by primary key,
whatever the table holds: they read the batch's own rows and no others. (Joined
to the batch's JSON document as the planner liked, which it guesses at 100 rows,
write_steps read every unfinished workflow for each batch: a backlog of them
made each checkpoint cost more, 0.5 to 1.1 ms of Postgres CPU per workflow as it
grew in the benchmark's workers mode.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from engine._sql import Queries

WORKFLOWS = 30_000
PENDING_EVERY = 6  # 5,000 unfinished: a backlog
BATCH = 50


@pytest.fixture
def crowded(database_url: str) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO onceflow.workflows (workflow_id, name, input, owner, status,"
            " source_group, source_topic, source_partition, source_offset)"
            " SELECT 'wf-' || g, 'app.handle', NULL, 'ex1',"
            " CASE WHEN mod(g, %s) = 0 THEN 'PENDING' ELSE 'SUCCESS' END,"
            " 'group', 'topic', mod(g, 4), g"
            " FROM generate_series(1, %s) g",
            [PENDING_EVERY, WORKFLOWS],
        )
        conn.execute("ANALYZE onceflow.workflows")
    return database_url


def _pending_ids() -> list[str]:
    return [f"wf-{PENDING_EVERY * i}" for i in range(1, BATCH + 1)]


def _steps_document() -> str:
    row = {"step": 0, "name": "s", "output": None, "error": None, "started_at": None, "epoch": 1}
    return json.dumps([{"workflow_id": w, **row} for w in _pending_ids()])


def _completions_document() -> str:
    row = {"epoch": 1, "status": "SUCCESS", "output": None, "error": None}
    return json.dumps([{"workflow_id": w, **row} for w in _pending_ids()])


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


@pytest.mark.parametrize(
    ("query", "document"),
    [("write_steps", _steps_document), ("complete_workflows", _completions_document)],
)
def test_a_batch_reads_its_own_workflows_and_no_others(
    crowded: str, query: str, document: Any
) -> None:
    statement = sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + Queries("onceflow")[query]
    with psycopg.connect(crowded) as conn, conn.transaction(force_rollback=True):
        row = conn.execute(statement, {"rows": document()}).fetchone()
    assert row is not None
    plan = row[0][0]["Plan"]
    reading = [
        node
        for node in _nodes(plan)
        if node.get("Relation Name") == "workflows"
        or str(node.get("Index Name", "")).startswith("workflows")
    ]
    assert reading, json.dumps(plan, indent=1)
    for node in reading:
        assert node["Node Type"] != "Seq Scan", json.dumps(plan, indent=1)
        assert node.get("Index Name", "workflows_pkey") == "workflows_pkey", json.dumps(node)
        assert node["Actual Rows"] * node["Actual Loops"] <= BATCH, json.dumps(node)
    # The statement did its work: every workflow of the batch matched.
    assert plan["Actual Rows"] == BATCH
