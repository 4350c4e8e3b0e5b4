"""One run of one system on a topic, and the check that its answer is right.

Each run gets a fresh consumer group and a fresh database (so its tables and
its commit counter hold that run alone), runs its consumer as a subprocess,
and is checked afterwards against the topic's end offsets: every record one
effect row (and, for Onceflow, one SUCCESS workflow with its three step
checkpoints). The plain consumers are at-least-once: their duplicates are
reported, not failed.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psycopg

from bench import infra, measure, workload
from bench.infra import ROOT, STATE_DIR, Poller, Services
from bench.measure import CpuMeter
from engine import migrate_database

ONCEFLOW_APP = "bench.apps.onceflow_app:app"


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    ends: dict[int, int]  # partition -> end offset; records are 0 .. end-1

    @property
    def records(self) -> int:
        return sum(self.ends.values())

    def first(self, count: int) -> dict[int, int]:
        """Per-partition limits covering about the first `count` records."""
        if count >= self.records:
            return dict(self.ends)
        share = count / self.records
        limits = {p: int(end * share) for p, end in self.ends.items()}
        short = count - sum(limits.values())
        for p in sorted(limits, key=lambda p: self.ends[p] - limits[p], reverse=True)[:short]:
            limits[p] += 1
        return limits


@dataclass
class RunResult:
    system: str
    events: int
    seconds: float
    commits: int | None = None
    rollbacks: int | None = None
    wal_bytes: int | None = None  # server-wide WAL written during the run
    peak_rss: int | None = None  # bytes, the largest process
    proc_cpu: float | None = None  # CPU seconds of the consumer process(es) during the run
    pg_cpu: float | None = None  # CPU seconds of their Postgres backends
    busy: float | None = None  # share of the machine's cores busy during the run
    duplicates: int = 0
    missing: int = 0
    problems: list[str] = field(default_factory=list)
    note: str = ""
    statements: list[str] = field(default_factory=list)  # pg_stat_statements, when available

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def service_env(extra: dict[str, str] | None = None, source: Path = ROOT) -> dict[str, str]:
    """The environment of a consumer subprocess; `source` is the tree its
    `engine` and `consumers` come from (another checkout, to compare a change)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra or {})}
    path = [str(source), str(ROOT), os.environ.get("PYTHONPATH")]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in path if p))
    env.pop("ONCEFLOW_SCHEMA", None)  # the checks read the default schema
    return env


# -- the plain consumers ---------------------------------------------------------


def run_plain(svc: Services, topic: Topic, mode: str, limits: dict[int, int]) -> RunResult:
    name = infra.unique("ofbench_plain_")
    expected = sum(limits.values())
    with infra.fresh_database(svc.server_url, name) as url:
        if mode.startswith("floor"):
            migrate_database(url)
            extra = ["--topic-id", infra.topic_id(svc.bootstrap, topic.name)]
        else:
            extra = []
        before = infra.counters(svc.server_url, name)
        cmd = [sys.executable, "-m", "bench.apps.plain", "--mode", mode, *extra]
        cmd += ["--database-url", url, "--bootstrap", svc.bootstrap, "--topic", topic.name]
        cmd += ["--group", infra.unique("ofbench-plain-")]
        cmd += ["--limits", ",".join(f"{p}:{o}" for p, o in sorted(limits.items()))]
        meter = CpuMeter(name)
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=service_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        meter.start()
        progress = infra.Progress()
        started = time.monotonic()
        line = ""
        while not line:
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            meter.sample()
            if ready:
                line = proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"plain consumer ({mode}) exited with {proc.wait()}")
            progress.show(f"plain {mode}: running {time.monotonic() - started:.0f}s")
        progress.done()
        meter.stop()  # its Postgres session is still open: its CPU is counted
        proc.stdin.close()
        proc.wait(60)
        out: dict[str, Any] = json.loads(line)
        delta = infra.counters(svc.server_url, name) - before
        result = RunResult(
            mode if mode.startswith("floor") else f"plain {mode}",
            int(out["events"]),
            float(out["seconds"]),
            commits=delta.commits,
            rollbacks=delta.rollbacks,
            wal_bytes=delta.wal,
            peak_rss=int(out["maxrss_kb"]) * 1024,
            proc_cpu=float(out["cpu_seconds"]),
            pg_cpu=meter.postgres_seconds,
            busy=meter.machine_busy,
        )
        with psycopg.connect(url, autocommit=True) as conn:
            if mode == "floor":
                check = onceflow_result(conn, Topic(topic.name, topic.partitions, limits), "")
                result.duplicates, result.missing = check.duplicates, check.missing
                result.problems += check.problems
            else:
                check_effects(conn, limits, result)
    if expected < topic.records:
        result.note = f"first {expected:,} of {topic.records:,} records"
    return result


def check_effects(conn: psycopg.Connection[Any], limits: dict[int, int], result: RunResult) -> None:
    """Count the effect rows of the records below `limits`: missing, doubled, stray."""
    parts, ends = zip(*sorted(limits.items()), strict=True)
    row = conn.execute(
        "WITH l AS (SELECT * FROM unnest(%s::int[], %s::bigint[]) AS l(part, lim))"
        " SELECT count(*),"
        " count(DISTINCT (e.part, e.off)) FILTER (WHERE e.off < l.lim),"
        " count(*) FILTER (WHERE l.lim IS NULL OR e.off >= l.lim)"
        " FROM bench_effects e LEFT JOIN l USING (part)",
        [list(parts), list(ends)],
    ).fetchone()
    assert row is not None
    rows, distinct, stray = (int(x) for x in row)
    expected = sum(limits.values())
    result.duplicates += rows - stray - distinct
    result.missing += expected - distinct
    if stray:
        result.problems.append(f"{stray} effect rows for records outside the run")


# -- Onceflow ---------------------------------------------------------------------


def onceflow_env(
    svc: Services,
    url: str,
    topic: str,
    group: str,
    extra: dict[str, str],
    source: Path = ROOT,
) -> dict[str, str]:
    return service_env(
        {
            "ONCEFLOW_DATABASE_URL": url,
            "ONCEFLOW_KAFKA_BOOTSTRAP_SERVERS": svc.bootstrap,
            workload.ENV_TOPIC: topic,
            workload.ENV_GROUP: group,
            workload.ENV_TABLE: workload.DEFAULT_TABLE,
            **extra,
        },
        source,
    )


class ServiceGroup:
    """Onceflow consumer services as real processes, `onceflow run` each."""

    def __init__(
        self,
        env: dict[str, str],
        logs: list[Path],
        cmd: list[str] | None = None,
        source: Path = ROOT,
    ) -> None:
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []
        self._files: list[IO[bytes]] = []
        if cmd is None:
            cmd = [sys.executable, "-m", "consumers.cli", "run", ONCEFLOW_APP]
            cmd += ["--progress-every", "5"]
        for log in logs:
            f = log.open("wb")
            self._files.append(f)
            self.procs.append(
                subprocess.Popen(cmd, cwd=source, env=env, stdout=f, stderr=subprocess.STDOUT)
            )

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def check_alive(self) -> None:
        for proc, log in zip(self.procs, self.logs, strict=True):
            if proc.poll() is not None:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                raise RuntimeError(f"service pid {proc.pid} exited with {proc.returncode}:\n{tail}")

    def peak_rss(self) -> int | None:
        peaks = [measure.vm_hwm(pid) for pid in self.pids]
        known = [p for p in peaks if p is not None]
        return max(known) if known else None

    def stop(self) -> list[int]:
        """SIGTERM: a graceful stop (running workflows finish, offsets commit)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in self.procs:
            try:
                codes.append(proc.wait(60))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait())
        for f in self._files:
            f.close()
        return codes


@dataclass
class OnceflowOptions:
    services: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    produce_after_stable: int = 0  # produce this many records once the group is stable
    timeout: float = 1800.0
    keep: bool = False
    py_spy: float = 0.0  # seconds of py-spy on the (first) service, 0: none
    py_spy_args: tuple[str, ...] = ("--gil",)
    statements: bool = False  # print the top statements (needs pg_stat_statements)
    source: Path = ROOT  # the tree the service's engine and consumers come from


def run_onceflow(
    svc: Services, topic: Topic, label: str = "onceflow", opts: OnceflowOptions | None = None
) -> RunResult:
    opts = opts or OnceflowOptions()
    name = infra.unique("ofbench_of_")
    group = infra.unique("ofbench-of-")
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with infra.fresh_database(svc.server_url, name, keep=opts.keep) as url:
        before = infra.counters(svc.server_url, name)
        env = onceflow_env(svc, url, topic.name, group, opts.extra_env, opts.source)
        logs = [STATE_DIR / f"{name}-{i}.log" for i in range(opts.services)]
        services = ServiceGroup(env, logs, source=opts.source)
        meter = CpuMeter(name)
        for pid in services.pids:
            meter.watch(pid)
        poller: Poller | None = None
        try:
            if opts.produce_after_stable:
                infra.wait_group_stable(svc.bootstrap, group, opts.services, topic.partitions)
                time.sleep(1.0)  # assigned partitions resume after the hand-over check
                infra.produce(
                    svc.bootstrap, topic.name, opts.produce_after_stable, label=f"{label} produce"
                )
                ends = infra.end_offsets(svc.bootstrap, topic.name, topic.partitions)
                topic = Topic(topic.name, topic.partitions, ends)
            poller = Poller(url)
            wait_done(services, poller, meter, topic.records, label, opts)
            peak = services.peak_rss()
            meter.stop()
        finally:
            if poller is not None:
                poller.close()
            codes = services.stop()
        delta = infra.counters(svc.server_url, name) - before
        with psycopg.connect(url, autocommit=True) as conn:
            result = onceflow_result(conn, topic, label)
        if opts.statements:
            result.statements = measure.top_statements(svc.server_url, name)
        result.commits = delta.commits - (poller.statements if poller else 0)
        result.rollbacks, result.wal_bytes = delta.rollbacks, delta.wal
        result.peak_rss, result.busy = peak, meter.machine_busy
        result.proc_cpu, result.pg_cpu = meter.process_seconds, meter.postgres_seconds
        if any(codes):
            result.problems.append(f"service exit codes {codes} on SIGTERM (logs: {logs[0]})")
        if poller is not None and poller.reconnects:
            result.problems.append(
                "Postgres went away during the run (restarted by someone?): figures unreliable;"
                " point ONCEFLOW_SERVICES_DIR at services of the benchmark's own"
            )
    return result


def wait_done(
    services: ServiceGroup,
    poller: Poller,
    meter: CpuMeter,
    expected: int,
    label: str,
    opts: OnceflowOptions,
) -> None:
    progress = infra.Progress()
    started = time.monotonic()
    first: float | None = None
    spy: subprocess.Popen[bytes] | None = None
    while True:
        services.check_alive()
        done = poller.effects()
        if done == 0:
            meter.start()  # CPU counts from the first effect on, not the service's start-up
        else:
            meter.sample()
            first = first or time.monotonic()
            if opts.py_spy and spy is None:
                spy = _start_py_spy(services.pids[0], opts)
        span = time.monotonic() - first if first else 0.0
        rate = f" ({done / span:,.0f}/s)" if span > 1.0 else ""
        progress.show(f"{label}: {done:,}/{expected:,} effects{rate}")
        if done >= expected and poller.pending() == 0:
            break
        if time.monotonic() - started > opts.timeout:
            raise RuntimeError(f"{label}: {done}/{expected} effects after {opts.timeout:.0f}s")
        time.sleep(0.5)
    progress.done()
    if spy is not None:
        spy.wait()


def _start_py_spy(pid: int, opts: OnceflowOptions) -> subprocess.Popen[bytes]:
    out = STATE_DIR / f"py-spy-{pid}.txt"
    cmd = ["py-spy", "record", *opts.py_spy_args, "-p", str(pid)]
    cmd += ["-d", str(int(opts.py_spy)), "-f", "raw", "-o", str(out)]
    infra.say(f"  py-spy on pid {pid} for {opts.py_spy:.0f}s -> {out}")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def onceflow_result(conn: psycopg.Connection[Any], topic: Topic, label: str) -> RunResult:
    span = conn.execute(
        "SELECT count(*), extract(epoch FROM max(updated_at) - min(created_at))"
        " FROM onceflow.workflows"
    ).fetchone()
    assert span is not None
    result = RunResult(label, topic.records, float(span[1] or 0.0))
    statuses = dict(
        conn.execute("SELECT status, count(*) FROM onceflow.workflows GROUP BY status").fetchall()
    )
    parts, ends = zip(*sorted(topic.ends.items()), strict=True)
    row = conn.execute(
        "WITH l AS (SELECT * FROM unnest(%s::int[], %s::bigint[]) AS l(part, lim))"
        " SELECT count(*), count(DISTINCT (w.source_partition, w.source_offset))"
        " FROM onceflow.workflows w JOIN l ON l.part = w.source_partition"
        " WHERE w.status = 'SUCCESS' AND w.source_offset < l.lim",
        [list(parts), list(ends)],
    ).fetchone()
    assert row is not None
    success, distinct = int(row[0]), int(row[1])
    if success > distinct:
        result.problems.append(f"{success - distinct} extra SUCCESS workflows for one record")
    if distinct < topic.records:
        result.problems.append(f"{topic.records - distinct} records without a SUCCESS workflow")
    others = {s: n for s, n in statuses.items() if s != "SUCCESS"}
    if others:
        result.problems.append(f"workflows not SUCCESS: {others}")
    # Three checkpoints per workflow, or none for one run inline (not kept
    # by default: Engine's inline_steps).
    odd = conn.execute(
        "SELECT count(*) FROM (SELECT w.workflow_id FROM onceflow.workflows w"
        " LEFT JOIN onceflow.steps s USING (workflow_id)"
        " GROUP BY w.workflow_id HAVING count(s.step) NOT IN (0, 3)) odd"
    ).fetchone()
    if odd is not None and odd[0]:
        result.problems.append(f"{odd[0]} workflows with neither 3 step rows nor none")
    check_effects(conn, topic.ends, result)
    return result
