"""The consumer service's collector settings (consumers/_gc.py), checked in a
fresh interpreter each: they are process-wide."""

from __future__ import annotations

import subprocess
import sys

import pytest

_PROBE = """
import gc, sys
from consumers import _gc
arg = sys.argv[1]
_gc.tune_for_service(None if arg == "env" else int(arg))
print(gc.get_threshold()[0], gc.get_freeze_count() > 0)
"""


def _tuned(arg: str, env: dict[str, str] | None = None) -> tuple[int, bool]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, arg],
        capture_output=True,
        text=True,
        check=True,
        env={**env} if env is not None else None,
    ).stdout.split()
    return int(out[0]), out[1] == "True"


def test_the_service_spaces_young_collections_and_freezes_its_startup() -> None:
    assert _tuned("12345") == (12345, True)


def test_zero_leaves_the_collector_as_python_set_it() -> None:
    import gc

    assert _tuned("0") == (gc.get_threshold()[0], False)


@pytest.mark.parametrize(("value", "expected"), [("", 50_000), ("2000", 2000), ("0", 700)])
def test_the_environment_sets_the_default(value: str, expected: int) -> None:
    import os

    env = {**os.environ, "ONCEFLOW_GC_THRESHOLD": value}
    assert _tuned("env", env)[0] == expected
