"""Migrations: applied once, in order, under a lock; edits refused (STYLE.md)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import engine_flows
import psycopg
import pytest
from engine_support import Executors

import engine

EXPECTED_COLUMNS = {
    "workflows": {
        "workflow_id",
        "name",
        "status",
        "input",
        "output",
        "error",
        "owner",
        "epoch",
        "attempts",
        "created_at",
        "updated_at",
        "source_group",
        "source_topic",
        "source_partition",
        "source_offset",
        "ordering_key",
    },
    "steps": {"workflow_id", "step", "name", "output", "error", "started_at", "finished_at"},
    "executors": {"executor_id", "heartbeat_at", "hostname", "pid", "started_at"},
    "schema_migrations": {"version", "name", "checksum", "applied_at"},
}

EXPECTED_INDEXES = {
    "workflows_pkey": "(workflow_id)",
    "workflows_pending_owner": "(owner) WHERE (status = 'PENDING'::text)",
    "workflows_pending_source": "(source_group, source_topic, source_partition, source_offset)"
    " WHERE (status = 'PENDING'::text)",
    "workflows_unfinished_created": "(status, created_at DESC) WHERE (status <> 'SUCCESS'::text)",
    "workflows_created_brin": "USING brin (created_at)"
    " WITH (pages_per_range='512', autosummarize='on')",
    "steps_pkey": "(workflow_id, step)",
    "executors_pkey": "(executor_id)",
    "schema_migrations_pkey": "(version)",
}


APPLIED = [
    (1, "initial"),
    (2, "no_statistics_on_payloads"),
    (3, "light_statistics"),
    (4, "inputs_optional"),
    (5, "lighter_listing_indexes"),
    (6, "wider_brin_ranges"),
    (7, "ids_compare_bytewise"),
]


def applied(url: str) -> list[tuple[int, str]]:
    return [
        (v, n)
        for v, n in engine_flows.query(
            url, "SELECT version, name FROM onceflow.schema_migrations ORDER BY version"
        )
    ]


def test_second_migration_applies_nothing(empty_database_url: str) -> None:
    assert engine.migrate_database(empty_database_url) == [1, 2, 3, 4, 5, 6, 7]
    assert engine.migrate_database(empty_database_url) == []
    assert applied(empty_database_url) == APPLIED


def test_schema_has_the_expected_tables_columns_and_indexes(database_url: str) -> None:
    columns: dict[str, set[str]] = {}
    for table, column in engine_flows.query(
        database_url,
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = 'onceflow'",
    ):
        columns.setdefault(table, set()).add(column)
    assert columns == EXPECTED_COLUMNS

    indexes = dict(
        engine_flows.query(
            database_url, "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'onceflow'"
        )
    )
    assert set(indexes) == set(EXPECTED_INDEXES)
    for name, tail in EXPECTED_INDEXES.items():
        assert indexes[name].endswith(tail), indexes[name]


def test_analyze_samples_little_and_skips_the_payloads(database_url: str) -> None:
    engine_flows.query(
        database_url,
        "INSERT INTO onceflow.workflows (workflow_id, name, input, output)"
        " SELECT 'wf-' || i, 'flow', '{\"args\": []}', to_jsonb(i)"
        " FROM generate_series(1, 5000) i RETURNING 1",
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ANALYZE onceflow.workflows")
    analyzed = dict(
        engine_flows.query(
            database_url,
            "SELECT attname, cardinality(histogram_bounds::text::text[]) FROM pg_stats"
            " WHERE schemaname = 'onceflow' AND tablename = 'workflows'",
        )
    )
    assert {"workflow_id", "name", "status"} <= set(analyzed)
    assert not set(analyzed) & {"input", "output", "error"}
    assert analyzed["workflow_id"] == 11  # a target of 10: ten buckets, not a hundred


def test_two_processes_migrating_at_once_both_succeed(
    empty_database_url: str, tmp_path: Path
) -> None:
    spawned = Executors(empty_database_url)
    go = tmp_path / "go"
    try:
        procs = [spawned.start("--migrate", "--wait-for", str(go)) for _ in range(2)]
        time.sleep(1.0)  # both processes are up, waiting for the signal
        go.touch()
        results = sorted(spawned.finish(p) for p in procs)
    finally:
        spawned.close()

    # One applied them, the other waited and found them done.
    assert results == [[], [1, 2, 3, 4, 5, 6, 7]]
    assert applied(empty_database_url) == APPLIED


def test_edited_applied_migration_is_refused(engine_factory: Any, database_url: str) -> None:
    engine_flows.query(
        database_url,
        "UPDATE onceflow.schema_migrations SET checksum = 'edited' WHERE version = 1 RETURNING 1",
    )

    with pytest.raises(engine.MigrationError, match="edited after it was applied") as caught:
        engine.migrate_database(database_url)
    assert caught.value.version == 1
    for migrate in (True, False):
        with pytest.raises(engine.MigrationError, match="add a new migration instead"):
            engine_factory(migrate=migrate).launch()


def connections_to(url: str) -> int:
    """Sessions open on the database of `url`, other than this query's."""
    ((count,),) = engine_flows.query(
        url,
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    return int(count)


def test_unmigrated_database_is_refused_without_migrate(
    empty_database_url: str,
    engine_factory: Any,  # this order: engines stop before the drop
) -> None:
    refused = engine_factory(database_url=empty_database_url, migrate=False)
    with pytest.raises(engine.SchemaNotMigratedError, match="onceflow migrate"):
        refused.launch()
    assert (
        engine_flows.query(
            empty_database_url,
            "SELECT 1 FROM information_schema.schemata WHERE schema_name = 'onceflow'",
        )
        == []
    )
    assert connections_to(empty_database_url) == 0  # a refused launch holds nothing open

    engine_factory(database_url=empty_database_url).launch()  # migrate=True: it migrates
    assert applied(empty_database_url) == APPLIED
    refused.launch()  # and the engine refused before launches now
    assert connections_to(empty_database_url) > 0
