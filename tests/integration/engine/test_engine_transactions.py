"""Transaction steps: their SQL and their checkpoint commit together or not at all."""

from __future__ import annotations

import threading
from typing import Any

import engine_flows
import psycopg
import pytest

import engine


def test_failed_attempt_rolls_back_and_retry_takes_effect_once(
    engine_factory: Any, effects_url: str
) -> None:
    eng = engine_factory()
    failures = [RuntimeError("after the insert")]

    @eng.transaction(retries=2, initial_delay=0.01)
    def insert_then_fail(conn: psycopg.Connection[Any]) -> str:
        conn.execute(
            "INSERT INTO public.effects VALUES (%s, %s, 'x')",
            (engine.current_workflow_id(), engine.step_idempotency_key()),
        )
        if failures:
            raise failures.pop()
        return "inserted"

    @eng.workflow()
    def wf() -> str:
        return insert_then_fail()

    eng.launch()
    assert eng.start(wf, workflow_id="wf").result(timeout=30) == "inserted"
    assert engine_flows.effects(effects_url) == [("wf", "wf:1", "x")]


def test_transaction_step_out_of_retries_leaves_no_effect(
    engine_factory: Any, effects_url: str
) -> None:
    eng = engine_factory()

    @eng.transaction(name="always_fails", retries=1, initial_delay=0.01)
    def always_fails(conn: psycopg.Connection[Any]) -> None:
        conn.execute("INSERT INTO public.effects VALUES ('wf', 'k', 'x')")
        raise KeyError("no luck")

    @eng.workflow()
    def wf() -> None:
        always_fails()

    eng.launch()
    with pytest.raises(engine.WorkflowFailedError) as caught:
        eng.start(wf, workflow_id="wf").result(timeout=30)

    assert caught.value.error["type"] == "builtins.KeyError"
    assert engine_flows.effects(effects_url) == []
    (step,) = eng.get_steps("wf")
    assert step.name == "always_fails" and step.error is not None
    assert step.error["type"] == "builtins.KeyError"


def test_sql_error_in_a_step_fails_that_step_only(engine_factory: Any, effects_url: str) -> None:
    """A server error in a step's SQL (here: a row lock it may not wait for) is
    the step's failure, not an outage: no retry of the whole batch, no stall."""
    eng = engine_factory()
    with psycopg.connect(effects_url, autocommit=True) as conn:
        conn.execute("INSERT INTO public.effects VALUES ('locked', 'k', 'x')")

    @eng.transaction(name="take_lock")
    def take_lock(conn: psycopg.Connection[Any]) -> None:
        conn.execute("SELECT * FROM public.effects WHERE workflow_id = 'locked' FOR UPDATE NOWAIT")

    @eng.transaction(name="insert")
    def insert(conn: psycopg.Connection[Any]) -> str:
        conn.execute(
            "INSERT INTO public.effects VALUES (%s, 'k', 'x')", (engine.current_workflow_id(),)
        )
        return "inserted"

    @eng.workflow(name="blocked")
    def blocked() -> None:
        take_lock()

    @eng.workflow(name="bystander")
    def bystander() -> str:
        return insert()

    eng.launch()
    with psycopg.connect(effects_url) as holder:
        holder.execute("SELECT * FROM public.effects FOR UPDATE")
        with pytest.raises(engine.WorkflowFailedError) as caught:
            eng.start(blocked, workflow_id="blocked").result(timeout=10)
        assert eng.start(bystander, workflow_id="bystander").result(timeout=10) == "inserted"

    assert caught.value.error["type"] == "psycopg.errors.LockNotAvailable"
    assert sorted(w for w, _, _ in engine_flows.effects(effects_url)) == ["bystander", "locked"]


def test_context_inside_workflows_and_steps(engine_factory: Any) -> None:
    eng = engine_factory()
    seen: dict[str, str] = {}

    @eng.step()
    def plain() -> None:
        seen["plain id"] = engine.current_workflow_id()
        seen["plain key"] = engine.step_idempotency_key()

    @eng.transaction()
    def in_transaction(conn: psycopg.Connection[Any]) -> None:
        seen["tx id"] = engine.current_workflow_id()
        seen["tx key"] = engine.step_idempotency_key()

    @eng.step()
    def plain_number() -> str:
        return engine.step_idempotency_key()

    @eng.step()
    def inner() -> str:
        return engine.step_idempotency_key()

    @eng.step()
    def outer() -> str:
        return inner()  # a step inside a step: an ordinary call, under the outer's key

    @eng.workflow()
    def wf() -> None:
        seen["workflow id"] = engine.current_workflow_id()
        plain()
        in_transaction()
        seen["nested key"] = outer()
        seen["after nested"] = plain_number()
        with pytest.raises(engine.OnceflowError, match="outside a step"):
            engine.step_idempotency_key()

    eng.launch()
    eng.start(wf, workflow_id="ctx").result(timeout=30)

    assert seen == {
        "workflow id": "ctx",
        "plain id": "ctx",
        "plain key": "ctx:1",
        "tx id": "ctx",
        "tx key": "ctx:2",
        "nested key": "ctx:3",
        "after nested": "ctx:4",
    }
    with pytest.raises(engine.OnceflowError, match="outside a workflow"):
        engine.current_workflow_id()
    with pytest.raises(engine.OnceflowError, match="outside a step"):
        engine.step_idempotency_key()


def test_many_transaction_steps_in_flight_commit_once_each(
    engine_factory: Any, effects_url: str
) -> None:
    # Enough concurrent workflows that the writer commits many steps per batch.
    eng = engine_factory(workers=32)
    flows = engine_flows.register(eng)
    eng.launch()
    barrier = threading.Barrier(4)

    def start_some(offset: int) -> list[engine.WorkflowHandle[list[str]]]:
        barrier.wait()
        return [
            eng.start(flows.two_effects, 0.0, workflow_id=f"wf-{offset + i}") for i in range(50)
        ]

    results: list[list[engine.WorkflowHandle[list[str]]]] = []
    threads = [
        threading.Thread(target=lambda o=o: results.append(start_some(o)))
        for o in range(0, 200, 50)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    handles = [h for hs in results for h in hs]
    assert len(handles) == 200
    for h in handles:
        assert h.result(timeout=60) == [f"{h.workflow_id}:2", f"{h.workflow_id}:4"]
    rows = engine_flows.effects(effects_url)
    assert sorted((w, k) for w, k, _ in rows) == sorted(
        (f"wf-{i}", f"wf-{i}:{n}") for i in range(200) for n in (2, 4)
    )
