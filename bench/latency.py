"""Produce→complete latency of Onceflow at a fixed offered load.

The service starts on an empty topic and waits for its partitions; then a
rate-limited producer offers `rate` records a second. Each record's latency
is read from Postgres afterwards:

- produce→effect: `done_at` (`clock_timestamp()` when the transaction step's
  INSERT ran) minus the record's produce time (the producer's wall clock just
  before its `produce()`, kept by the producer: what CreateTime would be);
- produce→complete: the commit time of the transaction that made the
  workflow SUCCESS (`pg_xact_commit_timestamp`, when the server runs with
  `track_commit_timestamp = on`, as the native test cluster does) minus the
  produce time. Without it, the workflow's `updated_at` is used: `now()` of
  that transaction, i.e. its *start*, which understates the latency of work
  committed in batches (the report says which was used);
- produce→broker and broker→complete: the topic stamps records with the
  broker's LogAppendTime, which splits produce→complete where the record
  reached the log: before it, the producer and the broker (linger, the
  produce request); after it, the consumer's fetch and Onceflow.

The first `warmup` seconds of records are left out of the percentiles.
"""

from __future__ import annotations

import math
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from bench import infra
from bench.infra import ROOT, STATE_DIR, Poller, Services
from bench.measure import CpuMeter, CpuTimeline, DiskWrites, broker_uptime
from bench.runs import (
    OnceflowOptions,
    ServiceGroup,
    Topic,
    onceflow_env,
    onceflow_result,
    wait_done,
)
from bench.speed import MachineSpeed

QUANTILES = (0.50, 0.95, 0.99, 1.0)


@dataclass
class LatencyResult:
    services: int  # consumer services in the group
    offered: float
    achieved: float
    measured: int  # records in the percentiles
    warmup: int  # records left out
    effect_ms: dict[float, float] = field(default_factory=dict)
    complete_ms: dict[float, float] = field(default_factory=dict)
    # produce->complete split where the record reached the broker's log.
    broker_ms: dict[float, float] = field(default_factory=dict)
    after_broker_ms: dict[float, float] = field(default_factory=dict)
    complete_by: str = "commit time"  # what "complete" was read from
    peak_rss: int | None = None
    busy: float = 0.0
    duplicates: int = 0
    missing: int = 0
    problems: list[str] = field(default_factory=list)
    # The machine's busiest half second of disk writes: bytes/s, and when
    # (seconds after the first record was offered).
    disk_peak: float = 0.0
    disk_peak_at: float | None = None
    # The half second of produce times whose records took longest: (seconds
    # after the first record was offered, median produce->complete ms).
    slowest: tuple[float, float] | None = None
    # p99 of each 5 s of produce times: (seconds after the first record
    # offered, p99 ms).
    p99_by_5s: list[tuple[float, float]] = field(default_factory=list)
    # The same windows' p99 of produce->broker alone.
    broker_p99_by_5s: list[tuple[float, float]] = field(default_factory=list)
    # Wall clock of the first record offered: to find the run in Postgres's log.
    began_at: float | None = None
    # How long the broker had been up when offering began (None: not seen here).
    broker_uptime: float | None = None
    # The machine's own speed in each of those 5 s windows: a fixed loop's
    # CPU time over its fastest (bench/speed.py); 1.0 is full speed.
    slowdown_by_5s: list[float | None] = field(default_factory=list)
    # CPU in each of those windows: µs per record offered of the services and
    # of their Postgres backends, and the machine's busy cores (None: unsampled).
    cpu_by_5s: list[tuple[float, float, float] | None] = field(default_factory=list)
    # The service's busiest thread by 5 s: share of the time on a CPU, and
    # runnable but waiting for one.
    thread_by_5s: list[tuple[float, float] | None] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Split:
    """One record's times: produced (wall clock ms), and from there the ms to
    the broker's log, to its effect and to its workflow's completion."""

    produced: float
    broker: float
    effect: float
    complete: float

    @classmethod
    def of(cls, produced: float, appended: float, effect_at: float, complete_at: float) -> Split:
        return cls(produced, appended - produced, effect_at - produced, complete_at - produced)


def _windows(rows: list[tuple[float, float]], width_ms: float) -> dict[int, list[float]]:
    """(produced_ms, latency_ms) rows by `width_ms` window of produce time
    (0: the window of the first record produced), latencies sorted."""
    first = min(p for p, _ in rows)
    windows: dict[int, list[float]] = {}
    for produced, latency in rows:
        windows.setdefault(int((produced - first) // width_ms), []).append(latency)
    for values in windows.values():
        values.sort()
    return windows


def slowest_window(
    rows: list[tuple[float, float]], width_ms: float = 500.0
) -> tuple[float, float] | None:
    """Of (produced_ms, latency_ms) rows: the `width_ms` window of produce
    times with the highest median latency, as (seconds after the first
    record, that median)."""
    if not rows:
        return None
    windows = _windows(rows, width_ms)
    index, values = max(windows.items(), key=lambda kv: kv[1][len(kv[1]) // 2])
    return index * width_ms / 1000, values[len(values) // 2]


def timeline(
    rows: list[tuple[float, float]], width_ms: float = 5000.0
) -> list[tuple[float, float]]:
    """Of (produced_ms, latency_ms) rows: each `width_ms` window's p99, as
    (seconds after the first record, p99 ms), in time order. Shows whether
    a run's tail is one stall or spread over the run."""
    if not rows:
        return []
    windows = _windows(rows, width_ms)
    return [
        (index * width_ms / 1000, percentiles(values)[0.99])
        for index, values in sorted(windows.items())
    ]


def _after(warmup: float, window: tuple[float, float] | None) -> tuple[float, float] | None:
    """A window timed from the first measured record, timed from the first offered."""
    return None if window is None else (window[0] + warmup, window[1])


def percentiles(values: list[float]) -> dict[float, float]:
    """Nearest-rank percentiles of QUANTILES."""
    ordered = sorted(values)
    if not ordered:
        return {}
    n = len(ordered)
    return {q: ordered[min(n - 1, max(0, math.ceil(q * n) - 1))] for q in QUANTILES}


def run_latency(
    svc: Services,
    partitions: int,
    rate: float,
    seconds: float,
    *,
    warmup: float = 2.0,
    extra_env: dict[str, str] | None = None,
    keep: bool = False,
    services: int = 1,
    source: Path = ROOT,
    topics: list[str] | None = None,
) -> LatencyResult:
    """`topics`, when given, gets the topic made here and the caller deletes
    it after its last measurement (else it is deleted at the end of this
    one): a deleted topic's files go later, while the next phase measures."""
    topic_name = infra.unique("ofbench-lat-")
    infra.create_topic(
        svc.bootstrap, topic_name, partitions, {"message.timestamp.type": "LogAppendTime"}
    )
    stamps: array[float] = array("d")
    name, group = infra.unique("ofbench_lat_"), infra.unique("ofbench-lat-")
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    try:
        with infra.fresh_database(svc.server_url, name, keep=keep) as url:
            env = onceflow_env(svc, url, topic_name, group, extra_env or {}, source)
            logs = [STATE_DIR / f"{name}-{i}.log" for i in range(services)]
            group_of = ServiceGroup(env, logs, source=source)
            meter = CpuMeter(name)
            poller = Poller(url)
            speed = MachineSpeed()
            timeline_cpu = CpuTimeline(name, group_of.pids)
            try:
                infra.wait_group_stable(svc.bootstrap, group, services, partitions)
                time.sleep(1.0)  # assigned partitions resume after the hand-over check
                meter.start()
                disk = DiskWrites()
                disk.start()
                progress = infra.Progress(every=5.0)
                speed.start()
                timeline_cpu.start()
                uptime = broker_uptime()
                began, began_at = time.monotonic(), time.time()
                sent = infra.produce_at_rate(
                    svc.bootstrap,
                    topic_name,
                    rate,
                    warmup + seconds,
                    stamps=stamps,
                    on_tick=lambda n: progress.show(
                        f"latency: offered {n:,} records at {rate:,.0f}/s"
                    ),
                )
                achieved = sent / (time.monotonic() - began)
                timeline_cpu.stop()
                disk.stop()
                progress.done()
                ends = infra.end_offsets(svc.bootstrap, topic_name, partitions)
                topic = Topic(topic_name, partitions, ends)
                wait_done(group_of, poller, meter, sent, "latency drain", OnceflowOptions())
                peak = group_of.peak_rss()
                meter.stop()
            finally:
                speed.stop()
                poller.close()
                group_of.stop()
            skip = int(rate * warmup)
            with psycopg.connect(url, autocommit=True) as conn:
                setting = conn.execute("SHOW track_commit_timestamp").fetchone()
                committed = setting is not None and setting[0] == "on"
                completed_at = "pg_xact_commit_timestamp(w.xmin)" if committed else "w.updated_at"
                # (record number, broker append ms, effect ms, complete ms);
                # produced_ms is the record's timestamp: here the broker's.
                rows = conn.execute(
                    "SELECT e.event_id, e.produced_ms, extract(epoch FROM e.done_at) * 1000,"
                    f" extract(epoch FROM {completed_at}) * 1000"
                    " FROM bench_effects e JOIN onceflow.workflows w"
                    " ON w.source_partition = e.part AND w.source_offset = e.off"
                    " WHERE e.event_id >= %s",
                    [skip],
                ).fetchall()
                check = onceflow_result(conn, topic, "latency")
    finally:
        if topics is None:
            infra.delete_topics(svc.bootstrap, [topic_name])
        else:
            topics.append(topic_name)
    split = [Split.of(stamps[int(r[0])], *map(float, r[1:])) for r in rows]
    timed = [(s.produced, s.complete) for s in split]
    p99_by_5s = [(at + warmup, p99) for at, p99 in timeline(timed)]
    broker_by_5s = timeline([(s.produced, s.broker) for s in split])
    return LatencyResult(
        services=services,
        offered=rate,
        achieved=achieved,
        measured=len(rows),
        warmup=min(skip, sent),
        effect_ms=percentiles([s.effect for s in split]),
        complete_ms=percentiles([s.complete for s in split]),
        broker_ms=percentiles([s.broker for s in split]),
        after_broker_ms=percentiles([s.complete - s.broker for s in split]),
        complete_by="commit time" if committed else "updated_at (transaction start)",
        peak_rss=peak,
        busy=meter.machine_busy,
        duplicates=check.duplicates,
        missing=check.missing,
        problems=check.problems,
        disk_peak=disk.peak,
        disk_peak_at=disk.peak_at,
        slowest=_after(warmup, slowest_window(timed)),
        p99_by_5s=p99_by_5s,
        broker_p99_by_5s=[(at + warmup, p99) for at, p99 in broker_by_5s],
        began_at=began_at,
        broker_uptime=uptime,
        slowdown_by_5s=[speed.slowdown(began + at, began + at + 5.0) for at, _ in p99_by_5s],
        cpu_by_5s=[
            per_record_cpu(timeline_cpu.used(began + at, began + at + 5.0), rate)
            for at, _ in p99_by_5s
        ],
        thread_by_5s=[
            timeline_cpu.busiest_thread(began + at, began + at + 5.0) for at, _ in p99_by_5s
        ],
    )


def per_record_cpu(
    used: tuple[float, float, float] | None, rate: float
) -> tuple[float, float, float] | None:
    """CPU s/s of the services and their backends as µs per record offered;
    the machine's busy cores as they are."""
    if used is None:
        return None
    services, backends, machine = used
    return services * 1e6 / rate, backends * 1e6 / rate, machine
