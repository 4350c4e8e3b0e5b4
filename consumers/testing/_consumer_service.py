"""`ConsumerService`: a consumer service run as a real subprocess for tests.

It runs `python -m consumers.cli run MODULE:APP`, to stop, kill, freeze and
restart it as a crash test needs, and keeps its output for failure messages.

Nothing here imports pytest: failed waits raise AssertionError.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


class ConsumerService:
    """A consumer service run as a subprocess: `python -m consumers.cli run APP`.

    Its output (stdout and stderr) is appended to `log_path` across restarts,
    so a failed test can show what the service said (`tail()`).

    Args:
        app: `MODULE:ATTRIBUTE` naming the KafkaApp.
        env: overrides of this process's environment (ONCEFLOW_DATABASE_URL,
            ONCEFLOW_KAFKA_BOOTSTRAP_SERVERS, ONCEFLOW_EXECUTOR_ID,
            ONCEFLOW_LEASE, ONCEFLOW_FAULT, ...); None removes a variable.
            Kept in `self.env`, which may be changed between starts.
        pythonpath: directories put first on PYTHONPATH, to import `app` from.
        args: arguments after `run APP` (for example `--stop-timeout 5`).
        log_path: where the output goes (default: a new temporary file).
    """

    def __init__(
        self,
        app: str,
        *,
        env: Mapping[str, str | None] | None = None,
        pythonpath: Sequence[str | Path] = (),
        args: Sequence[str] = (),
        log_path: str | Path | None = None,
    ) -> None:
        self.app = app
        self.env: dict[str, str | None] = dict(env or {})
        self.pythonpath = [str(p) for p in pythonpath]
        self.args = list(args)
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix="onceflow-service-", suffix=".log")
            os.close(fd)
        self.log_path = Path(log_path)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_start = 0

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit code (negative: killed by that signal); None while it runs."""
        return None if self._proc is None else self._proc.poll()

    def is_alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the service (an error if it already runs)."""
        if self.is_alive():
            raise RuntimeError(f"{self} is already running")
        env = dict(os.environ)
        for key, value in self.env.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        if self.pythonpath:
            rest = [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []
            env["PYTHONPATH"] = os.pathsep.join([*self.pythonpath, *rest])
        env["PYTHONUNBUFFERED"] = "1"
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(f"=== start: {self.app} {' '.join(self.args)}\n")
            log.flush()
            self._log_start = log.tell()
            cmd = [sys.executable, "-m", "consumers.cli", "run", self.app, *self.args]
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
            )

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (a graceful stop) and wait for the exit code; past `timeout`,
        SIGKILL and raise TimeoutError."""
        proc = self._started()
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a frozen process cannot handle SIGTERM
            proc.terminate()
        try:
            return self.wait(timeout)
        except TimeoutError:
            self.kill()
            raise

    def kill(self) -> int:
        """SIGKILL: a crash, no clean-up at all. Returns the exit code."""
        proc = self._started()
        if proc.poll() is None:
            proc.kill()
        return self.wait(30.0)

    def pause(self) -> None:
        """SIGSTOP: freeze the process, as if hung (no heartbeats, no polls)."""
        self._started().send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT: let a paused process go on."""
        self._started().send_signal(signal.SIGCONT)

    def restart(self, timeout: float = 30.0) -> None:
        """Stop gracefully (if running) and start again with `self.env` as it is now."""
        if self.is_alive():
            self.stop(timeout)
        self.start()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit; return its exit code."""
        try:
            return self._started().wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{self} still runs after {timeout}s\n{self.tail()}") from None

    def output(self, *, since_start: bool = True) -> str:
        """What the service wrote (by default since its latest start)."""
        try:
            with self.log_path.open(encoding="utf-8", errors="replace") as log:
                log.seek(self._log_start if since_start else 0)
                return log.read()
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 40) -> str:
        """The last lines of output, to put in an assertion message."""
        text = self.output(since_start=False).splitlines()[-lines:]
        body = "\n".join(f"    {line}" for line in text) or "    (no output)"
        return f"last lines of {self.log_path}:\n{body}"

    def wait_for_output(self, text: str, timeout: float = 30.0) -> None:
        """Wait until `text` appears in the output since the latest start.

        Raises:
            AssertionError: the service exited, or `timeout` passed, first.
        """
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if not self.is_alive():
                raise AssertionError(
                    f"{self} exited ({self.returncode}) before printing {text!r}\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"{self} did not print {text!r} in {timeout}s\n{self.tail()}")
            time.sleep(0.05)

    def close(self) -> None:
        """Kill the process if it still runs (paused or not)."""
        if self.is_alive():
            self.kill()

    def __enter__(self) -> ConsumerService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ConsumerService {self.app} pid={self.pid}>"

    def _started(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError(f"{self} was never started")
        return self._proc
