"""The latency report's slowest window (bench/latency.py): where in a run the
records that waited longest were produced, to set beside the disk's writes."""

from __future__ import annotations

import pytest

from bench.latency import Split, per_record_cpu, slowest_window, timeline
from bench.measure import CpuTimeline
from bench.speed import MachineSpeed


def test_the_window_with_the_highest_median_is_found_and_timed_from_the_first_record() -> None:
    rows = [(1_000.0 + 10 * i, 20.0) for i in range(300)]  # 3 s of 20 ms records
    rows += [(2_600.0 + i, 700.0) for i in range(0, 300, 3)]  # a stall at +1.6 s
    assert slowest_window(rows) == (1.5, 700.0)


def test_one_slow_record_does_not_make_a_window_slow() -> None:
    rows = [(float(i), 10.0) for i in range(1_000)] + [(700.0, 900.0)]
    window = slowest_window(rows)
    assert window is not None and window[1] == 10.0


def test_no_rows_no_window() -> None:
    assert slowest_window([]) is None


def test_the_timeline_gives_each_five_seconds_its_p99_in_order() -> None:
    rows = [(10_000.0 + i, 10.0) for i in range(0, 15_000, 10)]  # 15 s of 10 ms records
    rows += [(16_000.0 + i, 400.0) for i in range(0, 200, 10)]  # a stall at +6 s
    assert timeline(rows) == [(0.0, 10.0), (5.0, 400.0), (10.0, 10.0)]
    assert timeline([]) == []


def test_a_record_splits_where_it_reached_the_broker() -> None:
    # Produced at 1,000.0 ms (the producer's clock), appended at 1,004 (the
    # broker's LogAppendTime), its effect at 1,010.5, its workflow complete at 1,012.
    split = Split.of(1_000.0, 1_004.0, 1_010.5, 1_012.0)
    assert split == Split(produced=1_000.0, broker=4.0, effect=10.5, complete=12.0)


def test_the_machine_slowdown_is_a_span_mean_over_the_fastest_tenth() -> None:
    speed = MachineSpeed()
    speed.samples = [(0.0, 5_000.0), (0.1, 4_000.0)]  # a fresh process: left out
    speed.samples += [(1.0 + i, 600.0) for i in range(10)]  # full speed, +1 to +10 s
    speed.samples += [(11.0 + i, 900.0) for i in range(5)]  # the host takes a third
    assert speed.full_speed() == 600.0
    assert speed.slowdown(1.0, 11.0) == 1.0
    assert speed.slowdown(11.0, 16.0) == 1.5
    assert speed.slowdown(20.0, 25.0) is None  # no sample there
    assert MachineSpeed().slowdown(0.0, 1.0) is None


def test_a_short_slowdown_shows_in_its_span() -> None:
    speed = MachineSpeed()
    speed.samples = [(0.0, 5_000.0), (0.1, 4_000.0)]  # a fresh process: left out
    speed.samples += [(1.0 + i / 4, 600.0) for i in range(12)]  # +1 to +4 s: full speed
    speed.samples += [(4.0 + i / 4, 1_200.0) for i in range(8)]  # +4 to +6 s: half speed
    slowdown = speed.slowdown(1.0, 6.0)
    assert slowdown is not None and 1.3 < slowdown < 1.5  # 2 s of 5 at half speed


def test_cpu_of_a_window_is_read_from_the_samples_at_its_ends() -> None:
    cpu = CpuTimeline("db", [], every=1.0)
    # (monotonic s, services' CPU s, backends' CPU s, machine's busy CPU s)
    cpu.samples = [(100.0 + t, 0.5 * t, 0.4 * t, 1.0 * t) for t in range(5)]
    cpu.samples += [(105.0 + t, 2.5 + 0.8 * t, 2.0 + 0.4 * t, 5.0 + 1.5 * t) for t in range(1, 6)]
    assert cpu.used(100.0, 104.0) == pytest.approx((0.5, 0.4, 1.0))
    assert cpu.used(105.0, 110.0) == pytest.approx((0.8, 0.4, 1.5))
    assert cpu.used(200.0, 205.0) is None  # no samples there


def test_cpuper_record_cpu_is_the_cpu_rate_over_the_offered_rate() -> None:
    assert per_record_cpu((0.35, 0.28, 1.1), 35_000) == pytest.approx((10.0, 8.0, 1.1))
    assert per_record_cpu(None, 35_000) is None
