"""Crashes: a killed executor's workflow resumes from its last checkpoint.

The executors here are real subprocesses killed with SIGKILL: no shutdown
code runs, exactly as in a crash (STYLE.md, Tests).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import engine_flows
from engine_support import Executors, wait_until

import engine


def test_killed_after_step_one_resumes_at_step_two_on_restart(
    executors: Executors, engine_factory: Any, effects_url: str, tmp_path: Path
) -> None:
    proc = executors.start(
        "--workflow",
        "three_steps",
        "--id",
        "wf",
        "--arg",
        f'"{tmp_path}"',
        "--executor-id",
        "crashy",
        hang="two",
    )
    wait_until(lambda: (tmp_path / "ready").exists(), timeout=30, what="step two to start")
    # Step one's checkpoint is written behind the workflow: let it land first.
    ((step_one,),) = wait_until(
        lambda: engine_flows.query(effects_url, "SELECT output FROM onceflow.steps"),
        timeout=10,
        what="step one's checkpoint",
    )
    executors.kill(proc)

    # The same executor ID again: it resumes its own work at launch, no lease to wait out.
    eng = engine_factory(executor_id="crashy")
    engine_flows.register(eng)
    eng.launch()
    output = eng.handle("wf").result(timeout=30)

    assert output[0] == step_one  # step one's recorded result, not a new one
    runs = Counter(line.split()[0] for line in engine_flows.read_lines(tmp_path / "runs"))
    assert runs == {"one": 1, "two": 2, "three": 1}
    status = eng.get_workflow("wf")
    assert (status.status, status.output) == (engine.Status.SUCCESS, output)
    assert [s.name for s in eng.get_steps("wf")] == ["one", "two", "three"]
    assert [s.output for s in eng.get_steps("wf")] == output


def test_transaction_steps_take_effect_once_under_random_kills(
    executors: Executors, effects_url: str
) -> None:
    ids = [f"wf-{i}" for i in range(8)]
    args = ["--workflow", "two_effects", "--arg", "0.2", "--executor-id", "victim"]
    for wid in ids:
        args += ["--id", wid]
    rng = random.Random()

    def effects() -> int:
        return len(engine_flows.effects(effects_url))

    for attempt in range(4):
        proc = executors.start(*args)
        if attempt == 0:
            # Surely mid-run: first effects committed, the second ones 0.2 s away.
            wait_until(lambda p=proc: p.poll() is not None or effects(), timeout=60, what="effects")
            executors.kill(proc)
            assert 0 < effects() < 2 * len(ids) and pending(effects_url)
            continue
        # Anywhere: during start-up, launch, recovery, the steps or the shutdown.
        wait_until(
            lambda p=proc: p.poll() is not None or registered(effects_url, p.pid),
            timeout=60,
            what="launch",
        )
        time.sleep(rng.uniform(0.0, 0.5))
        if proc.poll() is None:
            executors.kill(proc)

    results = executors.finish(executors.start(*args))
    assert results == {wid: {"output": [f"{wid}:2", f"{wid}:4"]} for wid in ids}
    counted = Counter((wid, key) for wid, key, _ in engine_flows.effects(effects_url))
    assert counted == {(wid, key): 1 for wid in ids for key in (f"{wid}:2", f"{wid}:4")}
    assert pending(effects_url) == []


def registered(url: str, pid: int) -> bool:
    """Whether the executor in process `pid` has registered (it is launching)."""
    return bool(engine_flows.query(url, "SELECT 1 FROM onceflow.executors WHERE pid = %s", pid))


def pending(url: str) -> list[str]:
    rows = engine_flows.query(
        url, "SELECT workflow_id FROM onceflow.workflows WHERE status <> 'SUCCESS'"
    )
    return [r[0] for r in rows]
