"""Onceflow's memory with a large backlog (DESIGN.md §5, §9: no OOM under a backlog).

The backlog is produced first; then one service starts on it and its RSS
(psutil) is sampled every second, for `duration` seconds or until the
backlog is done. Flat memory means: what is in flight is bounded by
`max_in_flight`/`max_buffered`, not by the backlog.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil  # type: ignore[import-untyped,unused-ignore]
import psycopg

from bench import infra
from bench.infra import ROOT, STATE_DIR, Poller, Services
from bench.runs import RunResult, ServiceGroup, check_effects, onceflow_env


@dataclass
class BacklogResult:
    records: int
    produce_seconds: float
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (s, rss bytes, done)
    peak_rss: int | None = None
    first_effect: float | None = None  # seconds after the service started
    finished: bool = False
    duplicates: int = 0
    effects: int = 0  # records with their effect row, after the stop
    success: int = 0  # SUCCESS workflows, after the stop
    problems: list[str] = field(default_factory=list)

    @property
    def done(self) -> int:
        return self.samples[-1][2] if self.samples else 0

    @property
    def rate(self) -> float:
        if self.first_effect is None or not self.samples:
            return 0.0
        span = self.samples[-1][0] - self.first_effect
        return self.done / span if span > 0 else 0.0


def run_backlog(
    svc: Services,
    partitions: int,
    records: int,
    duration: float,
    *,
    extra_env: dict[str, str] | None = None,
    source: Path = ROOT,
) -> BacklogResult:
    topic = infra.unique("ofbench-backlog-")
    infra.create_topic(svc.bootstrap, topic, partitions)
    try:
        produced = infra.produce(svc.bootstrap, topic, records, label="backlog")
        infra.say(f"backlog: {records:,} records produced in {produced:.1f}s")
        result = BacklogResult(records, produced)
        name, group = infra.unique("ofbench_backlog_"), infra.unique("ofbench-backlog-")
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        with infra.fresh_database(svc.server_url, name) as url:
            env = onceflow_env(svc, url, topic, group, extra_env or {}, source)
            log = STATE_DIR / f"{name}.log"
            services = ServiceGroup(env, [log], source=source)
            poller = Poller(url)
            proc = psutil.Process(services.pids[0])
            progress = infra.Progress(every=10.0)
            started = time.monotonic()
            try:
                while True:
                    services.check_alive()
                    t = time.monotonic() - started
                    rss = proc.memory_info().rss
                    done = poller.effects()
                    if done and result.first_effect is None:
                        result.first_effect = t
                    result.samples.append((t, rss, done))
                    progress.show(
                        f"backlog: {t:4.0f}s  RSS {rss / 2**20:6.1f} MB  done {done:,}/{records:,}"
                    )
                    if done >= records and poller.pending() == 0:
                        result.finished = True
                        break
                    if t >= duration:
                        break
                    time.sleep(max(0.0, started + len(result.samples) - time.monotonic()))
                progress.done()
                result.peak_rss = services.peak_rss()
            finally:
                poller.close()
                codes = services.stop()
            if any(codes):
                result.problems.append(f"service exit code {codes[0]} on SIGTERM (log: {log})")
            with psycopg.connect(url, autocommit=True) as conn:
                # Whatever was done, was done once: no effect twice, none without its workflow.
                check = RunResult("backlog", 0, 0.0)
                ends = infra.end_offsets(svc.bootstrap, topic, partitions)
                check_effects(conn, ends, check)
                result.duplicates = check.duplicates
                row = conn.execute(
                    "SELECT count(*) FROM onceflow.workflows WHERE status = 'SUCCESS'"
                ).fetchone()
                success = int(row[0]) if row else 0
                # A workflow stopped between its effect and its completion is
                # merely unfinished (it resumes on the next start), not wrong.
                result.effects, result.success = records - check.missing, success
    finally:
        infra.delete_topics(svc.bootstrap, [topic])
    return result
