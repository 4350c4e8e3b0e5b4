"""Several latency runs of one mode (bench --latency-runs): the report judges
the target on the median of their p99s and shows each."""

from __future__ import annotations

from bench.latency import LatencyResult
from bench.report import _p99s


def _run(p99: float, offered: float = 35_000.0) -> LatencyResult:
    return LatencyResult(
        services=1,
        offered=offered,
        achieved=offered,
        measured=1,
        warmup=0,
        complete_ms={0.5: 9.0, 0.99: p99},
    )


def test_each_mode_keeps_its_runs_in_order() -> None:
    runs = [("onceflow", _run(30.0)), ("onceflow-workers", _run(90.0, 1_200.0))]
    runs += [("onceflow", _run(61.5)), ("onceflow", _run(44.0))]
    assert _p99s(runs) == {
        "onceflow": [(35_000.0, 30.0), (35_000.0, 61.5), (35_000.0, 44.0)],
        "onceflow-workers": [(1_200.0, 90.0)],
    }


def test_a_run_without_records_is_left_out() -> None:
    empty = LatencyResult(services=1, offered=1.0, achieved=0.0, measured=0, warmup=0)
    assert _p99s([("onceflow", empty)]) == {}
