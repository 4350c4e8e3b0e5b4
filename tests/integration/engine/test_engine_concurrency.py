"""Many workflows at once: all run, never more at a time than `workers`."""

from __future__ import annotations

import threading
import time
from typing import Any

import engine


def test_thousand_workflows_run_bounded_by_workers(engine_factory: Any) -> None:
    workers = 8
    eng = engine_factory(workers=workers)
    lock, gate = threading.Lock(), threading.Event()
    running = peak = 0

    @eng.step()
    def measure(i: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        gate.wait(30)  # the first ones hold every worker until all are started
        time.sleep(0.001)
        with lock:
            running -= 1
        return i

    @eng.workflow()
    def wf(i: int) -> int:
        return measure(i) * 2

    eng.launch()
    handles = [eng.start(wf, i, workflow_id=f"wf-{i}") for i in range(1000)]
    gate.set()

    assert [h.result(timeout=120) for h in handles] == [2 * i for i in range(1000)]
    assert peak == workers  # bounded, and the bound was reached
    done = eng.list_workflows(status=engine.Status.SUCCESS, limit=2000)
    assert len(done) == 1000
    assert eng.list_workflows(status=engine.Status.PENDING) == []
