"""Starting workflows: one row and one execution per ID, however it is started."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import engine_flows
import pytest
from engine_support import Executors, wait_until

import engine


def count(url: str, table: str) -> int:
    """Rows of one system table (`table` is a literal of this module, never input)."""
    ((n,),) = engine_flows.query(url, f"SELECT count(*) FROM onceflow.{table}")
    return int(n)


def start_together(starts: list[Any]) -> list[Any]:
    """Call every `start()` at the same moment from its own thread; return their results."""
    barrier = threading.Barrier(len(starts))
    results: list[Any] = [None] * len(starts)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = starts[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(starts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


@pytest.mark.parametrize("engines", [1, 2], ids=["one-engine", "two-engines"])
def test_same_id_started_from_two_threads_runs_once(
    engine_factory: Any, effects_url: str, tmp_path: Path, engines: int
) -> None:
    made = [engine_factory() for _ in range(engines)]
    flows = [engine_flows.register(e) for e in made]
    for e in made:
        e.launch()
    # The same engine from both threads, or one engine per thread.
    pairs = [(made[0], flows[0]), (made[-1], flows[-1])]
    handles = start_together(
        [lambda e=e, f=f: e.start(f.counted, str(tmp_path), workflow_id="same") for e, f in pairs]
    )

    assert [h.result(timeout=30) for h in handles] == ["same:2", "same:2"]
    assert count(effects_url, "workflows") == 1
    assert len(engine_flows.read_lines(tmp_path / "runs")) == 1
    assert [(w, k) for w, k, _ in engine_flows.effects(effects_url)] == [("same", "same:2")]


def test_same_id_started_from_two_processes_runs_once(
    executors: Executors, effects_url: str, tmp_path: Path
) -> None:
    go = tmp_path / "go-start"
    args = [
        "--workflow",
        "counted",
        "--id",
        "same",
        "--arg",
        f'"{tmp_path}"',
        "--wait-for",
        str(go),
    ]
    procs = [executors.start(*args) for _ in range(2)]
    # Both engines are launched (their executor rows exist) before the race starts.
    wait_until(lambda: count(effects_url, "executors") == 2, timeout=30, what="two executors")
    go.touch()

    results = [executors.finish(p) for p in procs]
    assert results == [{"same": {"output": "same:2"}}] * 2
    assert count(effects_url, "workflows") == 1
    assert len(engine_flows.read_lines(tmp_path / "runs")) == 1
    assert [(w, k) for w, k, _ in engine_flows.effects(effects_url)] == [("same", "same:2")]


def test_restarting_a_finished_workflow_returns_its_recorded_result(
    engine_factory: Any, effects_url: str, tmp_path: Path
) -> None:
    eng = engine_factory()
    flows = engine_flows.register(eng)
    eng.launch()
    first = eng.start(flows.counted, str(tmp_path), workflow_id="again").result(timeout=30)
    second = eng.start(flows.counted, "ignored", workflow_id="again").result(timeout=30)

    assert first == second == "again:2"
    assert len(engine_flows.read_lines(tmp_path / "runs")) == 1
    assert eng.get_workflow("again").input == {"args": [str(tmp_path)], "kwargs": {}}


def test_same_id_under_another_workflow_name_is_a_conflict(engine_factory: Any) -> None:
    eng = engine_factory()

    @eng.workflow(name="first")
    def first() -> str:
        return "first"

    @eng.workflow(name="second")
    def second() -> str:
        return "second"

    eng.launch()
    assert eng.start(first, workflow_id="taken").result(timeout=30) == "first"
    with pytest.raises(engine.WorkflowConflictError) as caught:
        eng.start(second, workflow_id="taken")

    assert (caught.value.workflow_id, caught.value.existing_name, caught.value.requested_name) == (
        "taken",
        "first",
        "second",
    )
    assert "pick another ID" in str(caught.value)
    assert eng.get_workflow("taken").name == "first"
