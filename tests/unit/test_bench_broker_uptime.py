"""The latency report flags a broker that has just started (bench/measure.py):
its JVM warms up in its first seconds, and latency measured then carries it."""

from __future__ import annotations

import subprocess
import sys
import time

from bench.measure import broker_uptime


def test_the_youngest_broker_process_gives_the_uptime() -> None:
    # A stand-in whose command line names the broker's main class, as a
    # native or containerised broker's does.
    stand_in = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "kafka.Kafka"]
    )
    try:
        time.sleep(0.5)
        uptime = broker_uptime()
        assert uptime is not None and 0.0 <= uptime < 10.0
    finally:
        stand_in.kill()
        stand_in.wait()
