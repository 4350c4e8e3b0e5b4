"""Step retries: exponential backoff with jitter, then ERROR, then resume."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from typing import Any

import pytest

import engine


def test_step_retries_with_growing_delays(engine_factory: Any) -> None:
    eng = engine_factory()
    calls: list[float] = []

    @eng.step(retries=3, initial_delay=0.1, backoff=3.0)
    def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) <= 3:
            raise ConnectionError(f"attempt {len(calls)} failed")
        return "ok"

    @eng.workflow()
    def wf() -> str:
        return flaky()

    eng.launch()
    assert eng.start(wf).result(timeout=30) == "ok"

    assert len(calls) == 4  # the first try and three retries
    delays = [b - a for a, b in itertools.pairwise(calls)]
    # Retry n waits between half and all of 0.1 * 3**(n-1) s ("equal jitter").
    for n, delay in enumerate(delays, start=1):
        base = 0.1 * 3 ** (n - 1)
        assert base / 2 <= delay < base + 0.25, (n, delays)
    assert delays[0] < delays[1] < delays[2]


def test_failed_step_ends_workflow_in_error_and_resume_reruns_only_the_rest(
    engine_factory: Any,
) -> None:
    eng = engine_factory()
    calls: Counter[str] = Counter()
    broken = True

    @eng.step(name="first")
    def first() -> int:
        calls["first"] += 1
        return 41

    @eng.step(name="flaky", retries=2, initial_delay=0.01)
    def flaky(n: int) -> int:
        calls["flaky"] += 1
        if broken:
            raise ValueError(f"flaky is broken (call {calls['flaky']})")
        return n + 1

    @eng.step(name="last")
    def last(n: int) -> int:
        calls["last"] += 1
        return n * 10

    @eng.workflow(name="fixable")
    def fixable() -> int:
        return last(flaky(first()))

    eng.launch()
    with pytest.raises(engine.WorkflowFailedError) as caught:
        eng.start(fixable, workflow_id="wf").result(timeout=30)

    assert calls == {"first": 1, "flaky": 3}
    error = caught.value.error
    assert error["type"] == "builtins.ValueError"
    assert error["message"] == "flaky is broken (call 3)"
    assert "in flaky" in error["traceback"] and "ValueError" in error["traceback"]
    status = eng.get_workflow("wf")
    assert (status.status, status.error, status.output) == (engine.Status.ERROR, error, None)
    steps = eng.get_steps("wf")
    assert [(s.name, s.output) for s in steps] == [("first", 41), ("flaky", None)]
    assert steps[0].error is None
    assert steps[1].error is not None and steps[1].error["message"] == "flaky is broken (call 3)"

    broken = False  # the fix is deployed
    assert eng.resume("wf").result(timeout=30) == 420

    assert calls == {"first": 1, "flaky": 4, "last": 1}  # "first" replayed, not re-run
    status = eng.get_workflow("wf")
    assert (status.status, status.output, status.error) == (engine.Status.SUCCESS, 420, None)
    assert [(s.name, s.output, s.error) for s in eng.get_steps("wf")] == [
        ("first", 41, None),
        ("flaky", 42, None),
        ("last", 420, None),
    ]

    # Resuming a workflow that succeeded leaves it as it is.
    assert eng.resume("wf").result(timeout=30) == 420
    assert calls == {"first": 1, "flaky": 4, "last": 1}
    with pytest.raises(engine.WorkflowNotFoundError):
        eng.resume("no-such-workflow")


def test_resume_of_a_workflow_running_here_leaves_it_running(engine_factory: Any) -> None:
    eng = engine_factory()
    started, release = threading.Event(), threading.Event()

    @eng.step()
    def slow() -> str:
        started.set()
        release.wait(10)
        return "done"

    @eng.workflow()
    def wf() -> str:
        return slow()

    eng.launch()
    eng.start(wf, workflow_id="wf")
    assert started.wait(10)
    handle = eng.resume("wf")
    release.set()

    assert handle.result(timeout=10) == "done"
    assert eng.get_workflow("wf").epoch == 1  # not reopened under a new epoch
