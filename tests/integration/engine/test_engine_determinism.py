"""Replays must call the same steps in the same order (DESIGN.md §6)."""

from __future__ import annotations

from typing import Any

import pytest

import engine


def test_replay_calling_another_step_fails_naming_both(engine_factory: Any) -> None:
    eng = engine_factory()
    version = 1
    ran: list[str] = []
    seen: list[engine.NonDeterministicWorkflowError] = []

    @eng.step(name="a")
    def a() -> str:
        ran.append("a")
        return "a"

    @eng.step(name="b")
    def b() -> str:
        ran.append("b")
        return "b"

    @eng.step(name="c")
    def c() -> str:
        ran.append("c")
        return "c"

    @eng.workflow(name="changing")
    def changing() -> list[str]:
        done = [a()]
        if version == 1:
            done.append(b())
            raise RuntimeError("crashed after b")
        try:
            done.append(c())
        except engine.NonDeterministicWorkflowError as exc:
            seen.append(exc)
            raise
        return done

    eng.launch()
    with pytest.raises(engine.WorkflowFailedError):
        eng.start(changing, workflow_id="wf").result(timeout=30)

    version = 2  # a deploy that calls "c" where the record says "b"
    with pytest.raises(engine.WorkflowFailedError) as caught:
        eng.resume("wf").result(timeout=30)

    assert ran == ["a", "b"]  # "a" replayed, "c" never ran
    (exc,) = seen
    assert (exc.workflow_id, exc.step, exc.expected, exc.found) == ("wf", 2, "b", "c")
    error = caught.value.error
    assert error["type"] == "engine._errors.NonDeterministicWorkflowError"
    assert "step 2 was recorded as 'b' but the replay called 'c'" in error["message"]
    assert eng.get_workflow("wf").status is engine.Status.ERROR
    assert [s.name for s in eng.get_steps("wf")] == ["a", "b"]  # the record is untouched
