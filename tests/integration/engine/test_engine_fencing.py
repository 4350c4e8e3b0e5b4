"""Fencing: an executor that lost a workflow can no longer change it.

The zombie is a real executor process frozen with SIGSTOP in the middle of a
step (a middle one or the last), past its lease, while a live executor claims the workflow and
completes it; then it is thawed (DESIGN.md §1.6).
"""

from __future__ import annotations

import signal
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

import engine_flows
from engine_support import Executors, wait_until

import engine


def start_frozen(
    executors: Executors, tmp_path: Path, workflow: str, hang: str, *args: str
) -> subprocess.Popen[str]:
    """An executor running `workflow` (ID "wf"), frozen once it hangs in step `hang`."""
    proc = executors.start(
        "--workflow", workflow, "--id", "wf", "--arg", f'"{tmp_path}"', *args, hang=hang
    )  # fmt: skip
    wait_until(lambda: (tmp_path / "ready").exists(), timeout=30, what=f"step {hang!r} to start")
    proc.send_signal(signal.SIGSTOP)
    return proc


def take_over(claimer: engine.Engine, proc: subprocess.Popen[str], tmp_path: Path) -> Any:
    """Wait for `claimer` to finish "wf" while `proc` is frozen; then thaw it
    and let its hanging step return."""
    try:
        return claimer.handle("wf").result(timeout=20)
    finally:
        proc.send_signal(signal.SIGCONT)
        (tmp_path / "go").touch()


def launched(engine_factory: Any, **settings: Any) -> engine.Engine:
    eng = engine_factory(**settings)
    engine_flows.register(eng)
    eng.launch()
    return eng


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


def test_zombie_frozen_in_its_last_step_is_fenced_at_its_completion(
    executors: Executors, engine_factory: Any, tmp_path: Path
) -> None:
    # Nothing after step three checks the epoch but the completion itself: it
    # is refused, and the zombie says so like a run stopped mid-way.
    claimer = launched(engine_factory)
    report = tmp_path / "report"
    proc = start_frozen(executors, tmp_path, "three_steps", "three", "--report", str(report))
    output = take_over(claimer, proc, tmp_path)
    assert executors.finish(proc) == {"wf": {"output": output}}

    assert engine_flows.read_lines(report) == ["wf None"]
    assert (
        "wf was taken over by another executor: its completion was refused"
        in (executors.logs[proc.pid])
    )
    status = claimer.get_workflow("wf")
    assert (status.status, status.owner, status.epoch) == (
        engine.Status.SUCCESS,
        claimer.executor_id,
        2,
    )
    assert [s.output for s in claimer.get_steps("wf")] == output


def test_a_transaction_a_zombie_left_open_does_not_keep_its_workflow(
    executors: Executors, engine_factory: Any, effects_url: str, tmp_path: Path
) -> None:
    # The zombie freezes inside a transaction that locks its workflow's row;
    # claims skip locked rows, so without ending that transaction the claimer
    # could not take the workflow until the zombie woke.
    claimer = launched(engine_factory)
    proc = start_frozen(executors, tmp_path, "locked_effect", "effect_holding_row")
    key = take_over(claimer, proc, tmp_path)
    assert executors.finish(proc) == {"wf": {"output": key}}

    # The zombie's effect rolled back with its transaction; its writer came
    # back on a new connection and was refused.
    assert engine_flows.effects(effects_url) == [("wf", key, claimer.executor_id)]
    assert "wf was taken over by another executor" in executors.logs[proc.pid]
    status = claimer.get_workflow("wf")
    assert (status.status, status.owner, status.epoch) == (
        engine.Status.SUCCESS,
        claimer.executor_id,
        2,
    )


def test_a_restart_under_the_same_id_ends_what_its_frozen_run_left_open(
    executors: Executors, engine_factory: Any, effects_url: str, tmp_path: Path
) -> None:
    # The earlier run never wakes (its host is gone, say) and its open
    # transaction locks the row the restart must hand back at launch.
    executor_id = f"stable-{uuid.uuid4().hex[:8]}"
    start_frozen(
        executors, tmp_path, "locked_effect", "effect_holding_row", "--executor-id", executor_id
    )

    restarted = engine_factory(executor_id=executor_id)
    engine_flows.register(restarted)
    launch = threading.Thread(target=restarted.launch, daemon=True)
    launch.start()
    launch.join(timeout=20)
    assert not launch.is_alive(), "launch waited on the frozen run's locks"
    key = restarted.handle("wf").result(timeout=20)
    assert engine_flows.effects(effects_url) == [("wf", key, executor_id)]
