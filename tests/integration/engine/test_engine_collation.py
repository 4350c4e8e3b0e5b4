"""Workflow IDs compare byte by byte (collation "C") in any database: in one
whose default collation is a language's, every comparison in the primary key
went through that collation (in en_US.UTF-8, 14.5-15.4 µs of Postgres CPU per
workflow on the benchmark's inline path against 8.1-9.6; migration 0007)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import engine_flows
import psycopg

import engine

ID_COLUMNS = {
    ("workflows", "workflow_id"),
    ("workflows", "owner"),
    ("workflows", "source_group"),
    ("workflows", "source_topic"),
    ("workflows", "ordering_key"),
    ("steps", "workflow_id"),
    ("executors", "executor_id"),
}


def test_the_database_default_is_a_language_s_but_ids_use_c(en_us_database_url: str) -> None:
    [(default,)] = engine_flows.query(
        en_us_database_url,
        "SELECT daticulocale FROM pg_database WHERE datname = current_database()",
    )
    assert default == "en-US"
    rows = engine_flows.query(
        en_us_database_url,
        "SELECT c.relname, a.attname, coll.collname FROM pg_attribute a"
        " JOIN pg_class c ON c.oid = a.attrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'onceflow'"
        " JOIN pg_collation coll ON coll.oid = a.attcollation",
    )
    collation = {(table, column): name for table, column, name in rows}
    assert {key: collation.get(key) for key in ID_COLUMNS} == dict.fromkeys(ID_COLUMNS, "C")


def test_ids_order_by_their_bytes_and_lookups_use_the_primary_key(
    en_us_database_url: str,
) -> None:
    with psycopg.connect(en_us_database_url, autocommit=True) as conn:
        # en-US puts "a" before "B"; bytes put "B" (0x42) before "a" (0x61).
        conn.execute(
            "INSERT INTO onceflow.workflows (workflow_id, name, input)"
            " VALUES ('a', 'f', NULL), ('B', 'f', NULL)"
        )
        ordered = conn.execute(
            "SELECT workflow_id FROM onceflow.workflows ORDER BY workflow_id"
        ).fetchall()
        assert [r[0] for r in ordered] == ["B", "a"]
        # A parameter of the database's collation still meets the "C" index.
        conn.execute("SET enable_seqscan = off")
        plan: Any = conn.execute(
            "EXPLAIN (FORMAT JSON) SELECT status FROM onceflow.workflows"
            " WHERE workflow_id = ANY(%s::text[])",
            [["a", "B"]],
        ).fetchone()
    assert plan is not None
    nodes = list(_nodes(plan[0][0]["Plan"]))
    assert "Seq Scan" not in {n["Node Type"] for n in nodes}, plan
    assert "workflows_pkey" in {n.get("Index Name") for n in nodes}, plan


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def test_a_workflow_runs_to_success_there(en_us_database_url: str) -> None:
    eng = engine.Engine(en_us_database_url, executor_id="en-us")
    try:

        @eng.step()
        def double(x: int) -> int:
            return 2 * x

        @eng.workflow()
        def flow(x: int) -> int:
            return double(x) + 1

        eng.launch()
        handle = eng.start(flow, 20, workflow_id="Wf-é-1")
        assert handle.result(timeout=30) == 41
        assert eng.start(flow, 20, workflow_id="Wf-é-1").result(timeout=30) == 41
    finally:
        eng.shutdown()
    assert engine_flows.query(
        en_us_database_url, "SELECT workflow_id, status FROM onceflow.workflows"
    ) == [("Wf-é-1", "SUCCESS")]
