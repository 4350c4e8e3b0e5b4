"""What every private native test service shares, and the error all services raise.

- `ServiceUnavailable`, and `default_state_dir()` (``ONCEFLOW_SERVICES_DIR``).
- `_NativeService`: a server kept under ``<state dir>/<name>``, started, stopped
  and restarted under a file lock, with ports chosen once and kept.
- Setup helpers: free ports, running a setup command (optionally as another OS
  user), telling a live process from a reused pid, tailing a log.

The servers themselves are in `_postgres_native` and `_kafka_native`.
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import json
import os
import pwd
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar, Final

ENV_SERVICES_DIR: Final = "ONCEFLOW_SERVICES_DIR"

# Budgets: generous for a loaded 2-core CI machine, short enough that a broken
# service fails the run within a minute or two instead of hanging it.
_READY_TIMEOUT: Final = 60.0
_SETUP_TIMEOUT: Final = 900.0  # apt-get, or a cold Maven fetch on a slow mirror


class ServiceUnavailable(RuntimeError):
    """No test service could be provided; the message says how to provide one."""


def default_state_dir() -> Path:
    """Where native services keep data, ports and logs between test sessions."""
    raw = os.environ.get(ENV_SERVICES_DIR)
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "onceflow" / "services"


# ------------------------------------------------------------------------- helpers


def _progress(message: str) -> None:
    # stderr, so `eval "$(python -m consumers.testing.services up)"` sees only exports.
    print(f"onceflow-services: {message}", file=sys.stderr, flush=True)


def _free_ports(count: int) -> list[int]:
    # Hold all sockets open together so the ports differ from each other.
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError as exc:
        return f"(no log at {path}: {exc.strerror})"
    if not text:
        return f"({path} is empty)"
    return f"last lines of {path}:\n" + "\n".join(f"    {line}" for line in text)


def _run(
    cmd: Sequence[str | Path],
    *,
    what: str,
    timeout: float,
    as_user: pwd.struct_passwd | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Run a setup command, returning stdout; on failure raise with its output's tail."""
    args = [str(part) for part in cmd]
    try:
        done = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            env=env,
            # Drop root for Postgres in the child itself: no PAM session or shell quoting
            # as with runuser/su, and no dependency on either being installed.
            user=as_user.pw_uid if as_user else None,
            group=as_user.pw_gid if as_user else None,
            extra_groups=[] if as_user else None,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceUnavailable(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()[-20:]
        raise ServiceUnavailable(
            f"{what} failed (exit {done.returncode}): {' '.join(args)}\n"
            + "\n".join(f"    {line}" for line in output)
        )
    return done.stdout


def _process_matches(pid: int, marker: str) -> bool:
    """Whether ``pid`` is alive and its command line contains ``marker`` (not a reused pid)."""
    try:
        return marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()  # zombies: b""
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return False
    except OSError:
        return False
    try:  # no /proc (macOS): liveness only
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


class _NativeService(abc.ABC):
    """A server under ``<state dir>/<name>``; start/stop/restart serialised by a file lock.

    The lock (fcntl, across processes) makes ``start()`` safe to call from concurrent
    test processes: the second caller waits and then reuses what the first started.
    """

    _name: ClassVar[str]

    def __init__(self, state_dir: Path | None = None) -> None:
        """Describe (not start) the service kept under ``state_dir``."""
        self._home = (state_dir or default_state_dir()) / self._name
        self._ports_file = self._home / "ports.json"

    @abc.abstractmethod
    def is_running(self) -> bool:
        """Whether the service is up."""

    def start(self) -> None:
        """Start the service, creating it on first use; reuse it if already running."""
        with self._lock():
            self._start_locked()

    def stop(self) -> None:
        """Stop the service, keeping its data and ports."""
        with self._lock():
            self._stop_locked()

    def restart(self) -> None:
        """Stop and start again with the same ports and data."""
        with self._lock():
            self._stop_locked()
            self._start_locked()

    @abc.abstractmethod
    def _start_locked(self) -> None: ...

    @abc.abstractmethod
    def _stop_locked(self) -> None: ...

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self._home.mkdir(parents=True, exist_ok=True)
        with (self._home / "lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
            yield

    def _ports(self) -> dict[str, int]:
        """Ports chosen at first start and kept, so restarts keep clients' addresses."""
        try:
            ports: dict[str, int] = json.loads(self._ports_file.read_text())
        except FileNotFoundError:
            raise ServiceUnavailable(
                f"native {self._name} under {self._home} was never started; call start()"
            ) from None
        return ports

    def _claim_ports(self, *names: str) -> dict[str, int]:
        if not self._ports_file.exists():
            ports = dict(zip(names, _free_ports(len(names)), strict=True))
            self._ports_file.write_text(json.dumps(ports))
        ports = self._ports()
        for port in ports.values():
            if _listening(port):
                raise ServiceUnavailable(
                    f"port {port} recorded in {self._ports_file} for the native {self._name} is"
                    f" used by another process; stop it, or delete {self._home} to start afresh"
                )
        return ports
