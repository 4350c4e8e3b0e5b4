"""The latency report's thread line (bench/measure.py CpuTimeline): of the
services' threads, the one that ran most, with its share of a span on a CPU
and waiting for one."""

from __future__ import annotations

import os
import threading

from bench.measure import CpuTimeline, thread_times


def _timeline(samples: list[tuple[float, dict[int, tuple[float, float]]]]) -> CpuTimeline:
    timeline = CpuTimeline("unused", pids=[], every=1.0)
    timeline.threads = samples
    return timeline


def test_the_busiest_thread_is_reported_as_shares_of_the_span() -> None:
    timeline = _timeline(
        [
            (10.0, {1: (5.0, 1.0), 2: (0.5, 0.0)}),
            (12.0, {1: (5.5, 1.2), 2: (1.5, 0.5)}),
            (15.0, {1: (6.5, 1.4), 2: (3.0, 1.1)}),
        ]
    )
    # Thread 2 ran 2.5 s of the 5: on a CPU half the time, waiting 22%.
    run, wait = timeline.busiest_thread(10.0, 15.0) or (0.0, 0.0)
    assert (round(run, 2), round(wait, 2)) == (0.5, 0.22)


def test_a_thread_that_started_within_the_span_is_left_out() -> None:
    timeline = _timeline([(0.0, {1: (1.0, 0.0)}), (5.0, {1: (2.0, 0.5), 7: (9.0, 9.0)})])
    assert timeline.busiest_thread(0.0, 5.0) == (0.2, 0.1)


def test_a_span_between_two_samples_has_no_figure() -> None:
    timeline = _timeline([(0.0, {1: (1.0, 0.0)}), (5.0, {1: (2.0, 0.5)})])
    assert timeline.busiest_thread(1.0, 2.0) is None


def test_this_process_threads_are_read_from_the_kernel() -> None:
    found = dict(thread_times(os.getpid()))
    assert threading.get_native_id() in found
    on_cpu, waiting = found[threading.get_native_id()]
    assert on_cpu > 0.0 and waiting >= 0.0
