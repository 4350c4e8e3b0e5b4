"""Helpers for the engine tests: polling with a deadline, executor subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import engine_flows

T = TypeVar("T")

RUN_ENGINE = Path(__file__).resolve().parent / "scripts" / "run_engine.py"


def wait_until(check: Callable[[], T], *, timeout: float, what: str, pause: float = 0.02) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(pause)


class Executors:
    """Starts `scripts/run_engine.py` subprocesses; kills any left at teardown."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.procs: list[subprocess.Popen[str]] = []
        self.logs: dict[int, str] = {}  # pid -> what a finished executor logged

    def start(self, *args: str, hang: str | None = None) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if k != engine_flows.HANG_ENV}
        if hang is not None:
            env[engine_flows.HANG_ENV] = hang
        proc = subprocess.Popen(
            [sys.executable, str(RUN_ENGINE), self.database_url, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.procs.append(proc)
        return proc

    def finish(self, proc: subprocess.Popen[str], timeout: float = 60) -> Any:
        """Wait for a clean exit; return the JSON it printed."""
        out, err = proc.communicate(timeout=timeout)
        self.logs[proc.pid] = err
        assert proc.returncode == 0, f"executor exited {proc.returncode}:\n{err}"
        return json.loads(out.strip().splitlines()[-1])

    def kill(self, proc: subprocess.Popen[str]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            proc.communicate(timeout=30)
