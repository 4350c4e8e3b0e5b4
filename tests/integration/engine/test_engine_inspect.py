"""Cancelling, listing and reading workflows."""

from __future__ import annotations

import threading
from typing import Any

import engine_flows
import psycopg
import pytest
from engine_support import wait_until

import engine


def test_cancel_fences_a_running_workflow_off(engine_factory: Any, effects_url: str) -> None:
    eng = engine_factory()
    started, release = threading.Event(), threading.Event()

    @eng.step(name="slow")
    def slow() -> None:
        started.set()
        release.wait(10)

    @eng.transaction(name="effect")
    def effect(conn: psycopg.Connection[Any]) -> None:
        conn.execute("INSERT INTO public.effects VALUES ('wf', 'k', 'x')")

    @eng.workflow()
    def wf() -> str:
        slow()
        effect()
        return "finished"

    eng.launch()
    handle = eng.start(wf, workflow_id="wf")
    assert started.wait(10)
    assert eng.cancel("wf") is True
    release.set()

    with pytest.raises(engine.WorkflowCancelledError):
        handle.result(timeout=10)
    # Nothing the run did after the cancel is recorded or took effect.
    assert eng.get_steps("wf") == []
    assert engine_flows.effects(effects_url) == []
    status = eng.get_workflow("wf")
    assert (status.status, status.output) == (engine.Status.CANCELLED, None)
    assert eng.cancel("wf") is False  # already ended
    with pytest.raises(engine.WorkflowNotFoundError):
        eng.cancel("no-such-workflow")


def test_list_workflows_by_status_and_name(engine_factory: Any) -> None:
    eng = engine_factory()
    release = threading.Event()

    @eng.workflow(name="ok")
    def ok() -> str:
        return "ok"

    @eng.workflow(name="fails")
    def fails() -> None:
        raise ValueError("no")

    @eng.step()
    def wait() -> None:
        release.wait(10)

    @eng.workflow(name="waits")
    def waits() -> None:
        wait()

    eng.launch()
    for i in range(3):
        eng.start(ok, workflow_id=f"ok-{i}").result(timeout=10)
    with pytest.raises(engine.WorkflowFailedError):
        eng.start(fails, workflow_id="failed").result(timeout=10)
    eng.start(waits, workflow_id="pending")
    eng.start(waits, workflow_id="cancelled")
    eng.cancel("cancelled")

    def ids(**query: Any) -> set[str]:
        return {w.workflow_id for w in eng.list_workflows(**query)}

    assert ids(status="SUCCESS") == {"ok-0", "ok-1", "ok-2"}
    assert ids(status=engine.Status.ERROR) == {"failed"}
    assert ids(status="PENDING") == {"pending"}
    assert ids(status="CANCELLED") == {"cancelled"}
    assert ids(name="waits") == {"pending", "cancelled"}
    assert ids() == {"ok-0", "ok-1", "ok-2", "failed", "pending", "cancelled"}
    assert len(eng.list_workflows(status="SUCCESS", limit=2)) == 2
    (failed,) = eng.list_workflows(status="ERROR")
    assert failed.error is not None and failed.error["message"] == "no"
    release.set()
    wait_until(lambda: not eng.list_workflows(status="PENDING"), timeout=10, what="the rest")


def test_listings_reach_back_past_the_recent_windows(
    engine_factory: Any, database_url: str
) -> None:
    # Successes are listed through widening windows of created_at (migration
    # 0005): the newest first, however far back the rest lie.
    ages = {
        "now-a": "1 second",
        "now-b": "2 seconds",
        "now-c": "3 seconds",
        "hours-a": "2 hours",
        "hours-b": "3 hours",
        "days": "10 days",
        "years": "2 years",
    }
    rows = ", ".join(
        f"('{wid}', 'flow', 'SUCCESS', now() - interval '{age}')" for wid, age in ages.items()
    )
    rows += ", ('old-error', 'flow', 'ERROR', now() - interval '3 years')"
    engine_flows.query(
        database_url,
        "INSERT INTO onceflow.workflows (workflow_id, name, status, created_at)"
        f" VALUES {rows} RETURNING 1",
    )
    eng = engine_factory()
    eng.launch()

    def listed(**query: Any) -> list[str]:
        return [w.workflow_id for w in eng.list_workflows(**query)]

    newest_first = list(ages)
    assert listed(status="SUCCESS", limit=2) == newest_first[:2]
    assert listed(status="SUCCESS", limit=4) == newest_first[:4]
    assert listed(status="SUCCESS") == newest_first
    assert listed() == [*newest_first, "old-error"]
    assert listed(limit=6) == newest_first[:6]
    assert listed(status="ERROR") == ["old-error"]
    assert listed(status="SUCCESS", name="other") == []
    with pytest.raises(ValueError, match="limit"):
        eng.list_workflows(limit=0)
