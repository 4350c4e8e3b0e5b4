"""Recovery: own work resumes at launch, a dead executor's work is taken over.

No operator action anywhere: the live executor's heartbeat loop claims what a
silent one left once its lease ran out (DESIGN.md §6).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import engine_flows
import pytest
from engine_support import Executors, wait_until

import engine


def insert_pending(url: str, workflow_id: str, name: str, owner: str | None, *args: Any) -> None:
    """A PENDING workflow as a crashed executor leaves it."""
    engine_flows.query(
        url,
        "INSERT INTO onceflow.workflows (workflow_id, name, input, owner) VALUES (%s, %s, %s, %s)"
        " RETURNING 1",
        workflow_id,
        name,
        json.dumps({"args": list(args), "kwargs": {}}),
        owner,
    )


def status_of(url: str, workflow_id: str) -> tuple[str, str | None, int]:
    ((status, owner, epoch),) = engine_flows.query(
        url,
        "SELECT status, owner, epoch FROM onceflow.workflows WHERE workflow_id = %s",
        workflow_id,
    )
    return status, owner, epoch


def test_launch_resumes_all_own_pending_workflows(engine_factory: Any, database_url: str) -> None:
    # More than the executor takes in one claim (2 x workers): none may be left behind.
    ids = [f"own-{i}" for i in range(5)]
    for wid in ids:
        insert_pending(database_url, wid, "double", "restarted", len(wid))
    eng = engine_factory(executor_id="restarted", workers=1)

    @eng.workflow(name="double")
    def double(n: int) -> int:
        return 2 * n

    eng.launch()

    assert [eng.handle(wid).result(timeout=15) for wid in ids] == [2 * len(w) for w in ids]
    assert {status_of(database_url, wid)[1] for wid in ids} == {"restarted"}


def test_a_launch_whose_first_recovery_fails_still_heartbeats_and_recovers(
    engine_factory: Any, database_url: str, tmp_path: Path
) -> None:
    # Postgres going away between registering and the first recovery: the
    # executor must not come up without its heartbeat (launch() cannot be
    # retried once launched), or it looks dead while it works.
    insert_pending(database_url, "wf", "three_steps", None, str(tmp_path))
    eng = engine_factory()
    engine_flows.register(eng)
    real_recover, failures = eng.recover, []

    def recover_failing_once() -> int:
        if not failures:
            failures.append(1)
            raise engine.DatabaseUnavailableError("Postgres went away (simulated)")
        return real_recover()

    eng.recover = recover_failing_once
    eng.launch()  # does not raise

    def heartbeat() -> Any:
        ((at,),) = engine_flows.query(
            database_url,
            "SELECT heartbeat_at FROM onceflow.executors WHERE executor_id = %s",
            eng.executor_id,
        )
        return at

    first = heartbeat()
    wait_until(lambda: heartbeat() > first, timeout=10, what="the next heartbeat")
    # The heartbeat loop's own recovery claims what the failed one left.
    wait_until(
        lambda: status_of(database_url, "wf")[1] == eng.executor_id,
        timeout=20,
        what="the heartbeat loop's recovery",
    )


def test_dead_executor_work_is_claimed_by_a_live_one_after_the_lease(
    executors: Executors, engine_factory: Any, effects_url: str, tmp_path: Path
) -> None:
    live = engine_factory()
    engine_flows.register(live)
    live.launch()
    lease = live.settings.lease
    dead_id = f"doomed-{uuid.uuid4().hex[:8]}"
    proc = executors.start(
        "--workflow",
        "hang_then_record",
        "--id",
        "wf",
        "--arg",
        f'"{tmp_path}"',
        "--executor-id",
        dead_id,
        hang="who",
    )
    wait_until(lambda: (tmp_path / "ready").exists(), timeout=30, what="the step to hang")

    # A heartbeating executor keeps its work, however long its step takes.
    time.sleep(lease + 0.5)
    assert status_of(effects_url, "wf") == ("PENDING", dead_id, 1)

    executors.kill(proc)
    killed_at = time.monotonic()
    output = live.handle("wf").result(timeout=15)
    took = time.monotonic() - killed_at

    # Claimed after the lease ran out, by the live executor's own heartbeat loop
    # (which looks every half lease), without anyone asking it to.
    assert lease - 1.0 < took < 2 * lease + 2
    assert output == {"who": live.executor_id, "finisher": live.executor_id}
    assert status_of(effects_url, "wf") == ("SUCCESS", live.executor_id, 2)
    assert [e for _, _, e in engine_flows.effects(effects_url)] == [live.executor_id]


def test_shutdown_hands_running_workflows_over_at_once(engine_factory: Any) -> None:
    release = threading.Event()
    ran_on: list[str] = []

    def register(eng: engine.Engine, *, blocks: bool) -> engine.Workflow[[], str]:
        @eng.step(name="wait")
        def wait() -> str:
            ran_on.append(eng.executor_id)
            if blocks:
                release.wait(10)
            return eng.executor_id

        @eng.workflow(name="handed_over")
        def handed_over() -> str:
            return wait()

        return handed_over

    first, second = engine_factory(), engine_factory()
    handed_over = register(first, blocks=True)
    register(second, blocks=False)
    first.launch()
    first.start(handed_over, workflow_id="wf")
    wait_until(lambda: ran_on, timeout=10, what="the step to start")
    first.shutdown(timeout=0.1)  # the step is still running: release it

    second.launch()  # takes released work at launch, with no lease to wait out
    assert second.handle("wf").result(timeout=10) == second.executor_id
    release.set()
    assert ran_on == [first.executor_id, second.executor_id]


def test_executor_leaves_workflows_it_cannot_run_to_one_that_can(
    engine_factory: Any, database_url: str
) -> None:
    insert_pending(database_url, "orphan", "only_some_know", "gone-executor", 21)
    ignorant = engine_factory()
    ignorant.launch()  # knows no workflow named "only_some_know"
    knowing = engine_factory()

    @knowing.workflow(name="only_some_know")
    def only_some_know(n: int) -> int:
        return 2 * n

    knowing.launch()

    assert knowing.handle("orphan").result(timeout=10) == 42
    assert status_of(database_url, "orphan")[1] == knowing.executor_id


def test_undecodable_input_is_parked_and_recovery_goes_on(
    engine_factory: Any, database_url: str
) -> None:
    eng = engine_factory()

    @eng.workflow(name="echo")
    def echo(value: Any) -> Any:
        return value

    eng.launch()
    # A model class renamed by a deploy: the recorded input names a path that is gone.
    gone = {"__onceflow_model__": "no_such_module:Gone", "data": {}}
    insert_pending(database_url, "poison", "echo", "dead-executor", gone)
    insert_pending(database_url, "healthy", "echo", "dead-executor", 7)

    assert eng.handle("healthy").result(timeout=10) == 7
    with pytest.raises(engine.WorkflowFailedError) as caught:
        eng.handle("poison").result(timeout=10)
    assert caught.value.error["type"] == "engine._errors.SerializationError"
    assert "no_such_module:Gone" in caught.value.error["message"]
    # The heartbeat survived it: the executor still beats a second later.
    time.sleep(1.0)
    ((age,),) = engine_flows.query(
        database_url,
        "SELECT extract(epoch FROM now() - heartbeat_at)::float"
        " FROM onceflow.executors WHERE executor_id = %s",
        eng.executor_id,
    )
    assert age < 0.9


def test_shutdown_returns_promptly_while_a_workflow_keeps_checkpointing(
    engine_factory: Any, database_url: str
) -> None:
    eng = engine_factory()
    started = threading.Event()

    @eng.step()
    def tick(i: int) -> int:
        started.set()
        time.sleep(0.0002)  # a steady stream of checkpoints, never a backlog
        return i

    @eng.workflow()
    def busy() -> None:
        for i in range(20_000):
            tick(i)

    eng.launch()
    eng.start(busy, workflow_id="busy")
    assert started.wait(10)
    time.sleep(0.2)  # checkpoints are flowing

    began = time.monotonic()
    eng.shutdown(timeout=0.1)  # it will not finish: hand it back, stop the writers
    assert time.monotonic() - began < 3.0
    assert status_of(database_url, "busy") == ("PENDING", None, 2)  # released, fenced
