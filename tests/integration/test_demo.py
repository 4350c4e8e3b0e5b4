"""The README's main job, end to end: `python scripts/demo.py` as a user runs it.

The demo finds its services the way it does for a user (docker compose when a
Docker engine answers, else the native services of consumers.testing, which
honour ONCEFLOW_TEST_*), starts the consumer service as a real process,
produces orders and checks in Postgres that every one completed exactly once.
Its exit status carries that verdict; a missing service fails it, loudly.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# 300 orders, one in a hundred broken on purpose: 297 paid, 3 parked in ERROR.
SUMMARY = re.compile(
    r"^OK: 300 events -> 297 SUCCESS, 3 ERROR \(parked\), 297 payments,"
    r" 0 duplicates, 0 missing$",
    re.MULTILINE,
)


def test_demo_accounts_for_every_event() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--events", "300", "--timeout", "240"],
        capture_output=True,
        text=True,
        timeout=480,
        check=False,
    )
    output = f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert done.returncode == 0, output
    assert SUMMARY.search(done.stdout), output
    assert "stopped gracefully by SIGTERM (exit 0)" in done.stdout, output
    assert "per-customer order   kept" in done.stdout, output
