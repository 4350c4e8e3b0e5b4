"""Fencing: an executor that lost a workflow can no longer change it.

The zombie is a real executor process frozen with SIGSTOP in the middle of a
step, past its lease, while a live executor claims the workflow and
completes it; then it is thawed (DESIGN.md §1.6).
"""

from __future__ import annotations

import signal
import uuid
from pathlib import Path
from typing import Any

import engine_flows
from engine_support import Executors, wait_until

import engine


def test_zombie_cannot_checkpoint_or_complete_after_takeover(
    executors: Executors, engine_factory: Any, effects_url: str, tmp_path: Path
) -> None:
    claimer = engine_factory()
    engine_flows.register(claimer)
    claimer.launch()
    zombie_id = f"zombie-{uuid.uuid4().hex[:8]}"
    report = tmp_path / "report"
    proc = executors.start(
        "--workflow",
        "hang_then_record",
        "--id",
        "wf",
        "--arg",
        f'"{tmp_path}"',
        "--executor-id",
        zombie_id,
        "--report",
        str(report),
        hang="who",
    )
    wait_until(lambda: (tmp_path / "ready").exists(), timeout=30, what="step 'who' to start")

    proc.send_signal(signal.SIGSTOP)  # frozen inside step 1, before its checkpoint
    try:
        output = claimer.handle("wf").result(timeout=20)  # claimed after the lease, run here
    finally:
        proc.send_signal(signal.SIGCONT)
    (tmp_path / "go").touch()  # the zombie's step 1 now returns and tries to checkpoint
    zombie_result = executors.finish(proc)

    # The zombie's run ended fenced off (status None), without completing the
    # workflow; its transaction step took no effect.
    assert engine_flows.read_lines(report) == ["wf None"]
    assert engine_flows.effects(effects_url) == [("wf", "wf:3", claimer.executor_id)]
    runs = engine_flows.read_lines(tmp_path / "runs")
    assert runs.count(f"touch {claimer.executor_id}") == 1
    # What stands is the claimer's: the output, every step, the final status.
    expected = {"who": claimer.executor_id, "finisher": claimer.executor_id}
    assert output == expected
    assert zombie_result == {"wf": {"output": expected}}
    status = claimer.get_workflow("wf")
    assert (status.status, status.output, status.owner, status.epoch) == (
        engine.Status.SUCCESS,
        expected,
        claimer.executor_id,
        2,
    )
    assert [(s.name, s.output) for s in claimer.get_steps("wf")] == [
        ("who", claimer.executor_id),
        ("touch", None),
        ("effect", "wf:3"),
    ]
