"""The chaos run, shortened for CI (DESIGN.md §8, crash tests): a few thousand
keyed records produced while consumer services are SIGKILLed, frozen into
zombies, stormed by joiners, and Postgres and the Kafka broker restart under
them; every fault kind twice. The independent checker of `bench.chaos` must
then find every record done once, each key's effects committed in order.

The full run is `python -m bench.chaos` (100,000 records, 25 faults).
Set CHAOS_SEED to replay a run's random choices (each run prints its seed).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from bench.chaos import KINDS, ChaosConfig, ChaosError, report, run_chaos

# About 80 s of faults (a broker restart alone takes 10-20 s on a loaded 2-core
# machine), spread over 100 s of production; the whole test takes 2-3 minutes.
# Sharpened for a short run: 100 keys at 60 records a second, so a key's next
# record comes while a zombie sleeps; a `work` step of 0.2 s and offsets
# committed every 0.2 s, so a zombie's running workflows are ones Kafka will
# not redeliver, which a new owner finds in Postgres alone.
CONFIG = ChaosConfig(
    records=6000,
    rate=60.0,
    keys=100,
    faults=2 * len(KINDS),
    work_seconds=0.2,
    commit_interval=0.2,
    drain_timeout=120.0,
)


@pytest.mark.slow
def test_every_record_runs_once_in_key_order_through_every_kind_of_fault(
    postgres_server_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    seed = os.environ.get("CHAOS_SEED")
    config = replace(CONFIG, seed=int(seed) if seed else None, log_dir=tmp_path)
    lines: list[str] = []
    try:
        result = run_chaos(
            config, server_url=postgres_server_url, bootstrap=kafka_bootstrap, say=lines.append
        )
    except ChaosError as exc:
        pytest.fail(str(exc), pytrace=False)
    report(result, lines.append)
    print("\n".join(lines))  # shown with -s, or on failure
    story = "\n".join(lines[-40:])
    assert result.ok, f"chaos run failed (seed {result.seed}):\n{story}"
    assert {f.kind for f in result.faults} == set(KINDS), story
    assert result.findings.produced == config.records, story
    assert result.findings.success == config.records, story
