"""Workflows shared by the engine tests and the subprocesses they crash.

Both sides register them with `register(engine)` under fixed names, so a
workflow recorded by a subprocess is recovered by the test's own engine.

A subprocess is told where to hang with `ONCEFLOW_TEST_HANG=<step>`: that
step writes `<dir>/ready` and waits for `<dir>/go` (which a SIGKILL test never
creates). The test process never sets it, so its runs never hang.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

import engine

HANG_ENV = "ONCEFLOW_TEST_HANG"

EFFECTS_DDL = """
CREATE TABLE IF NOT EXISTS public.effects (
    workflow_id text NOT NULL,
    key         text NOT NULL,
    executor    text NOT NULL
)
"""


def create_effects_table(database_url: str) -> None:
    """The side table transaction steps write to; no unique key, so duplicates show."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(EFFECTS_DDL)


def effects(database_url: str) -> list[tuple[str, str, str]]:
    """Every (workflow_id, key, executor) row written by transaction steps."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT workflow_id, key, executor FROM public.effects").fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def append_line(path: Path, line: str) -> None:
    # One write() of a short line with O_APPEND: lines from concurrent writers never mix.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def maybe_hang(step: str, directory: Path) -> None:
    if os.environ.get(HANG_ENV) != step:
        return
    append_line(directory / "ready", str(os.getpid()))
    while not (directory / "go").exists():
        time.sleep(0.02)


@dataclass(frozen=True)
class Flows:
    three_steps: engine.Workflow[[str], list[str]]
    hang_then_record: engine.Workflow[[str], dict[str, Any]]
    counted: engine.Workflow[[str], str]
    two_effects: engine.Workflow[[float], list[str]]
    locked_effect: engine.Workflow[[str], str]


def register(eng: engine.Engine) -> Flows:
    """Register the shared workflows on `eng`."""

    def run_line(directory: str, step: str) -> None:
        append_line(Path(directory) / "runs", f"{step} {eng.executor_id}")

    @eng.step(name="one")
    def one(directory: str) -> str:
        run_line(directory, "one")
        return uuid.uuid4().hex

    @eng.step(name="two")
    def two(directory: str) -> str:
        run_line(directory, "two")
        maybe_hang("two", Path(directory))
        return uuid.uuid4().hex

    @eng.step(name="three")
    def three(directory: str) -> str:
        run_line(directory, "three")
        maybe_hang("three", Path(directory))
        return uuid.uuid4().hex

    @eng.workflow(name="three_steps")
    def three_steps(directory: str) -> list[str]:
        return [one(directory), two(directory), three(directory)]

    @eng.step(name="who")
    def who(directory: str) -> str:
        maybe_hang("who", Path(directory))
        return eng.executor_id

    @eng.step(name="touch")
    def touch(directory: str) -> None:
        run_line(directory, "touch")

    def insert_effect(conn: psycopg.Connection[Any]) -> str:
        key = engine.step_idempotency_key()
        conn.execute(
            "INSERT INTO public.effects (workflow_id, key, executor) VALUES (%s, %s, %s)",
            (engine.current_workflow_id(), key, eng.executor_id),
        )
        return key

    @eng.transaction(name="effect")
    def effect(conn: psycopg.Connection[Any]) -> str:
        return insert_effect(conn)

    @eng.workflow(name="hang_then_record")
    def hang_then_record(directory: str) -> dict[str, Any]:
        first = who(directory)
        touch(directory)
        effect()
        return {"who": first, "finisher": eng.executor_id}

    @eng.step(name="nap")
    def nap(seconds: float) -> None:
        time.sleep(seconds)

    @eng.workflow(name="counted")
    def counted(directory: str) -> str:
        run_line(directory, "counted")  # in the body: one line per execution, replays too
        nap(0.05)
        return effect()

    @eng.workflow(name="two_effects")
    def two_effects(pause: float) -> list[str]:
        nap(pause)
        first = effect()
        nap(pause)
        second = effect()
        return [first, second]

    @eng.transaction(name="effect_holding_row")
    def effect_holding_row(conn: psycopg.Connection[Any], directory: str) -> str:
        # Locks the workflow's own row the way the writer's checkpoints do
        # (FOR SHARE), then may hang: a transaction left open by a frozen
        # executor, holding what a claim or a release must lock.
        conn.execute(
            sql.SQL("SELECT 1 FROM {}.workflows WHERE workflow_id = %s FOR SHARE").format(
                sql.Identifier(eng.settings.schema_name)
            ),
            (engine.current_workflow_id(),),
        )
        maybe_hang("effect_holding_row", Path(directory))
        return insert_effect(conn)

    @eng.workflow(name="locked_effect")
    def locked_effect(directory: str) -> str:
        return effect_holding_row(directory)

    return Flows(three_steps, hang_then_record, counted, two_effects, locked_effect)


def query(database_url: str, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Rows of one read-only query (tests inspect the system tables directly)."""
    with psycopg.connect(database_url) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def numbered_batch(count: int, name: str, *, digits: int = 3) -> list[engine.NewWorkflow]:
    """`count` workflows `name(i)` with IDs wf-000, wf-001, ... fed by offsets
    0, 1, ... of one partition."""
    return [
        engine.NewWorkflow(
            f"wf-{i:0{digits}d}", name, (i,), source=engine.Source("g", "t", 0, i, None)
        )
        for i in range(count)
    ]


def record_inline(eng: engine.Engine, batch: list[engine.NewWorkflow]) -> list[engine.Recorded]:
    """Record `batch`, running every fresh workflow of it inline."""
    return eng.record(batch, inline=lambda item, fresh: fresh)
