"""Measuring the runs: processes' memory and CPU, Postgres backends, the machine.

Linux first (VmHWM, /proc), through psutil; Postgres backends are told
apart by their process title, which names their database.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped,unused-ignore]
import psycopg


def vm_hwm(pid: int) -> int | None:
    """Peak resident set size of a live process (Linux VmHWM), bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def cpu_seconds(pid: int) -> float:
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(t.user + t.system)


def thread_times(pid: int) -> list[tuple[int, tuple[float, float]]]:
    """Each thread of `pid`: (seconds on a CPU, seconds runnable but waiting
    for one), from /proc/PID/task/TID/schedstat (Linux; none elsewhere)."""
    found: list[tuple[int, tuple[float, float]]] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
                found.append((int(tid), (int(fields[0]) / 1e9, int(fields[1]) / 1e9)))
    return found


def backend_cpu(database: str) -> dict[int, float]:
    """CPU seconds of each Postgres backend connected to `database`, by pid."""
    found: dict[int, float] = {}
    marker = f" {database} "
    for proc in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        info = proc.info
        cmdline = info.get("cmdline") or []
        if info.get("name") != "postgres" or not cmdline or marker not in cmdline[0]:
            continue
        t = info.get("cpu_times")
        if t is not None:
            found[proc.pid] = float(t.user + t.system)
    return found


class CpuMeter:
    """CPU used by some processes, by Postgres backends of one database, and by
    the whole machine, between `start()` and `stop()` (sampled as it goes, so a
    backend that exits keeps what it used up to its last sample)."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.pids: list[int] = []
        self._proc0: dict[int, float] = {}
        self._proc: dict[int, float] = {}
        self._pg0: dict[int, float] = {}
        self._pg: dict[int, float] = {}
        self._machine0 = psutil.cpu_times()
        self._machine1 = self._machine0

    def watch(self, pid: int) -> None:
        self.pids.append(pid)

    def start(self) -> None:
        self.sample()
        self._proc0, self._pg0 = dict(self._proc), dict(self._pg)
        self._machine0 = psutil.cpu_times()

    def sample(self) -> None:
        for pid in self.pids:
            used = cpu_seconds(pid)
            if used:
                self._proc[pid] = used
        self._pg.update(backend_cpu(self.database))
        self._machine1 = psutil.cpu_times()

    def stop(self) -> None:
        self.sample()

    @property
    def process_seconds(self) -> float:
        return sum(v - self._proc0.get(pid, 0.0) for pid, v in self._proc.items())

    @property
    def postgres_seconds(self) -> float:
        return sum(v - self._pg0.get(pid, 0.0) for pid, v in self._pg.items())

    @property
    def machine_busy(self) -> float:
        """Share of all cores busy (0..1)."""
        return busy_share(self._machine0, self._machine1)


def busy_share(a: Any, b: Any) -> float:
    """Share of all cores busy (0..1) between two `psutil.cpu_times()`."""
    total = sum(b) - sum(a)
    idle = (b.idle - a.idle) + (getattr(b, "iowait", 0.0) - getattr(a, "iowait", 0.0))
    return 0.0 if total <= 0 else 1.0 - idle / total


def top_statements(server_url: str, database: str, limit: int = 8) -> list[str]:
    """The statements that took most of Postgres' time in `database`, if the
    server has pg_stat_statements (shared_preload_libraries); else nothing."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        try:
            rows = conn.execute(
                "SELECT s.calls, s.total_exec_time, s.rows, regexp_replace(s.query, '\\s+', ' ', 'g')"
                " FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
                " WHERE d.datname = %s ORDER BY s.total_exec_time DESC LIMIT %s",
                [database, limit],
            ).fetchall()
        except psycopg.Error:
            return []
    return [
        f"{total:9,.0f} ms {calls:7,} calls {total / max(1, calls):7.2f} ms/call"
        f" {n / max(1, calls):6.1f} rows/call  {query[:110]}"
        for calls, total, n, query in rows
    ]


def machine() -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = psutil.virtual_memory().total / 2**30
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores ({model or 'unknown CPU'}), {mem:.0f} GiB, load avg {load}"


def server_version(server_url: str) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return "Postgres " + (str(row[0]).split()[0] if row else "?")


def background_load(seconds: float = 2.0, top: int = 3) -> tuple[float, list[tuple[str, float]]]:
    """The machine's busy share over `seconds` before a benchmark, and the
    processes that used the most CPU meanwhile (name, share of one core):
    load that counts against every system measured after it."""
    procs = {p.pid: p for p in psutil.process_iter(["name", "cmdline"])}
    before: dict[int, float] = {}
    for pid, proc in procs.items():
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            before[pid] = t.user + t.system
    machine0 = psutil.cpu_times()
    time.sleep(seconds)
    machine1 = psutil.cpu_times()
    used: list[tuple[str, float]] = []
    for pid, t0 in before.items():
        with contextlib.suppress(psutil.Error):
            t = procs[pid].cpu_times()
            cmdline = procs[pid].info.get("cmdline") or [procs[pid].info.get("name") or "?"]
            used.append((_shortened(" ".join(cmdline)), (t.user + t.system - t0) / seconds))
    used.sort(key=lambda u: u[1], reverse=True)
    return busy_share(machine0, machine1), [u for u in used[:top] if u[1] >= 0.02]


def broker_uptime() -> float | None:
    """Seconds since the youngest Kafka broker on this machine started (a
    process running `kafka.Kafka`), or None when none is seen here. A broker's
    JVM compiles its hot code in its first 15 s or so, at 70-90% of a core:
    latency measured then carries it (bench/README.md)."""
    started = []
    for proc in psutil.process_iter(["cmdline", "create_time"]):
        if "kafka.Kafka" in (proc.info.get("cmdline") or []):
            started.append(proc.info["create_time"])
    return time.time() - max(started) if started else None


def _shortened(text: str, most: int = 100) -> str:
    """`text` cut in the middle: a command's program and its last arguments
    (a broker's config path, say) tell most."""
    if len(text) <= most:
        return text
    half = most // 2 - 2
    return f"{text[:half]} … {text[-half:]}"


class _Periodic:
    """Takes a sample at `start()`, every `every` seconds on a thread of its
    own, and at `stop()`."""

    def __init__(self, every: float, name: str) -> None:
        self.every = every
        self._name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._sample()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def _sample(self) -> None:
        raise NotImplementedError


class CpuTimeline(_Periodic):
    """CPU used as a run goes, sampled every `every` seconds between `start()`
    and `stop()`: by some processes (the services), by the Postgres backends
    of one database, and by the whole machine. Where a latency run slows, it
    tells a service doing more work per record from the same work costing
    more CPU everywhere (the host giving the machine less: bench/README.md)."""

    def __init__(self, database: str, pids: list[int], every: float = 1.0) -> None:
        super().__init__(every, "cpu-timeline")
        self.database = database
        self.pids = pids
        # (monotonic s, CPU s of the processes, of the backends, of the machine's busy cores)
        self.samples: list[tuple[float, float, float, float]] = []
        self._last: dict[int, float] = {}  # each process's and backend's CPU s when last seen
        # (monotonic s, {thread ID of a process: (s on a CPU, s waiting for one)})
        self.threads: list[tuple[float, dict[int, tuple[float, float]]]] = []

    def used(self, begin: float, end: float) -> tuple[float, float, float] | None:
        """CPU seconds per second of [begin, end) (monotonic): of the
        processes, their backends and the machine; from the samples nearest
        its ends, None when the span falls between two samples."""
        inside = [s for s in self.samples if begin - self.every / 2 <= s[0] <= end + self.every / 2]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return None
        (t0, p0, b0, m0), (t1, p1, b1, m1) = inside[0], inside[-1]
        span = t1 - t0
        return (p1 - p0) / span, (b1 - b0) / span, (m1 - m0) / span

    def busiest_thread(self, begin: float, end: float) -> tuple[float, float] | None:
        """Of the processes' thread that ran most in [begin, end) (a consumer
        service's consumer thread): the share of the span it spent on a CPU,
        and the share it spent runnable, waiting for one (the kernel's
        schedstat). A thread that waits for a CPU while the machine has a
        core idle on average is one that other processes keep preempting."""
        inside = [s for s in self.threads if begin - self.every / 2 <= s[0] <= end + self.every / 2]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return None
        (t0, first), (t1, last) = inside[0], inside[-1]
        ran = {
            tid: (v[0] - first[tid][0], v[1] - first[tid][1])
            for tid, v in last.items()
            if tid in first
        }
        if not ran:
            return None
        on_cpu, waiting = max(ran.values())
        return on_cpu / (t1 - t0), waiting / (t1 - t0)

    def _sample(self) -> None:
        at = time.monotonic()
        self.threads.append((at, {tid: v for pid in self.pids for tid, v in thread_times(pid)}))
        for pid in self.pids:
            used = cpu_seconds(pid)
            if used:
                self._last[pid] = used
        backends = backend_cpu(self.database)
        self._last.update(backends)
        # A process that exited keeps what it used when last seen.
        procs = sum(v for pid, v in self._last.items() if pid in self.pids)
        pg = sum(v for pid, v in self._last.items() if pid not in self.pids)
        t = psutil.cpu_times()
        busy = sum(t) - t.idle - getattr(t, "iowait", 0.0)
        self.samples.append((at, procs, pg, busy))


class DiskWrites(_Periodic):
    """The machine's disk writes, sampled every `every` seconds between
    `start()` and `stop()`: where the kernel's write-back of dirty pages
    shows as a burst (a WAL flush queued behind one waits for it)."""

    def __init__(self, every: float = 0.5) -> None:
        super().__init__(every, "disk-writes")
        self.peak = 0.0  # bytes/s over the busiest sample
        self.peak_at: float | None = None  # seconds after start() that sample ended
        self._began: float | None = None
        self._last = (0.0, 0)  # (monotonic s, bytes written) at the sample before

    def _sample(self) -> None:
        now, written = time.monotonic(), _written()
        if self._began is None:
            self._began = now
        else:
            last_at, last = self._last
            # (The sample at stop() may close a sliver of a span: not a rate.)
            if now - last_at >= self.every / 2:
                rate = (written - last) / (now - last_at)
                if rate > self.peak:
                    self.peak, self.peak_at = rate, now - self._began
        self._last = (now, written)


def _written() -> int:
    counters = psutil.disk_io_counters(nowrap=True)
    return 0 if counters is None else int(counters.write_bytes)
