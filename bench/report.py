"""What the benchmark prints: the set-up, a line per run, the final tables."""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime

from bench import measure, workload
from bench.backlog import BacklogResult
from bench.infra import Services, say
from bench.latency import LatencyResult
from bench.runs import RunResult, Topic

# The targets: exactly-once at half the plain batched consumer's rate
# or better, and p99 produce->complete under 50 ms at half Onceflow's rate.
TARGET_RATIO = 0.5
TARGET_P99_MS = 50.0
# A broker up for less than this when the latency run began is flagged: runs
# 1-3 minutes after the services started had far slower tails here than runs
# an hour later (bench/README.md).
BROKER_WARM_SECONDS = 300.0


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def _us(seconds: float | None, events: int) -> str:
    return "-" if seconds is None or not events else f"{seconds * 1e6 / events:,.0f}"


def header(svc: Services, args: argparse.Namespace, extra_env: dict[str, str]) -> None:
    say("Onceflow benchmark")
    say(f"machine    {measure.machine()}")
    say(f"services   {measure.server_version(svc.server_url)}, Kafka at {svc.bootstrap} (loopback)")
    size = f"N={args.backlog:,}" if args.backlog else f"N={args.records:,}"
    say(
        f"workload   {size} records of ~{workload.RECORD_BYTES} bytes JSON, {args.partitions}"
        f" partitions, {workload.KEYS} keys; handler: 2 plain steps + 1 transaction step"
        " (one INSERT)"
    )
    if extra_env:
        say("service    " + " ".join(f"{k}={v}" for k, v in sorted(extra_env.items())))


def line(r: RunResult) -> None:
    say(
        f"  -> {r.system}: {r.events:,} events in {r.seconds:.2f}s = {r.rate:,.0f}/s;"
        f" commits/event {_ratio(r.commits, r.events)}; peak RSS {_mb(r.peak_rss)} MB;"
        f" duplicates {r.duplicates}, missing {r.missing}"
        + (f"; {r.rollbacks} rollbacks" if r.rollbacks else "")
        + (f"; {r.note}" if r.note else "")
        + "".join(f"\n     PROBLEM: {p}" for p in r.problems)
    )
    if r.statements:
        say("     top statements (pg_stat_statements, the run's database):")
        for s in r.statements:
            say(f"       {s}")


def _ratio(count: int | None, events: int) -> str:
    return "-" if count is None or not events else f"{count / events:.4f}"


_COLUMNS = (
    f"{'system':<18} {'events/s':>9} {'vs batched':>10} {'commits/ev':>10} {'peak RSS MB':>11}"
    f" {'CPU us/ev svc+pg':>16} {'WAL B/ev':>8} {'busy':>5} {'dup/missing':>11}"
)


def _wal(r: RunResult) -> str:
    return "-" if r.wal_bytes is None or not r.events else f"{r.wal_bytes / r.events:,.0f}"


def _row(r: RunResult, base: float | None, system: str | None = None) -> str:
    ratio = f"{r.rate / base:.3f}" if base else "-"
    cpu = f"{_us(r.proc_cpu, r.events)}+{_us(r.pg_cpu, r.events)}"
    busy = "-" if r.busy is None else f"{r.busy * 100:.0f}%"
    mark = "*" if r.note else ""
    return (
        f"{(system or r.system) + mark:<18} {r.rate:>9,.0f} {ratio:>10}"
        f" {_ratio(r.commits, r.events):>10} {_mb(r.peak_rss):>11} {cpu:>16} {_wal(r):>8}"
        f" {busy:>5} {f'{r.duplicates}/{r.missing}':>11}"
    )


def _base(results: Sequence[RunResult]) -> float | None:
    return next((r.rate for r in results if r.system == "plain batched"), None)


def compare(
    rounds: Sequence[Sequence[RunResult]],
    latencies: Sequence[tuple[str, LatencyResult]],
    topic: Topic,
    args: argparse.Namespace,
) -> int:
    for number, results in enumerate(rounds, 1):
        base = _base(results)
        of = f", round {number} of {len(rounds)}" if len(rounds) > 1 else ""
        say("")
        say(
            f"results    N={topic.records:,}, {topic.partitions} partitions{of},"
            f" {measure.machine()}"
        )
        say(_COLUMNS)
        for r in results:
            say(_row(r, base))
        if not any(r.system == "dbos" for r in results) and "dbos" in args.systems:
            say(f"{'dbos':<18} {'not installed':>9}")
    for r in rounds[-1]:
        if r.note:
            say(f"  * {r.system}: {r.note}")
    say(
        "  events/s: first record consumed to last effect committed (Onceflow: first workflow"
        " recorded to last completed)"
    )
    say(
        "  commits/ev: pg_stat_database xact_commit of the run's own database per event;"
        " CPU: consumer process + its Postgres backends; WAL: the server's, all databases;"
        " busy: all cores of the machine"
    )
    for system, lat in latencies:
        say("")
        say(
            f"latency    {system}{_in_services(lat.services)} at {lat.offered:,.0f} events/s"
            f" offered ({lat.achieved:,.0f}/s achieved), {lat.measured:,} records after a"
            f" {lat.warmup:,}-record warm-up;"
            f" peak RSS {_mb(lat.peak_rss)} MB, busy {lat.busy * 100:.0f}%"
        )
        if lat.began_at is not None:
            began = datetime.fromtimestamp(lat.began_at, UTC).strftime("%H:%M:%S.%f")
            say(f"  offered from {began[:-3]} UTC (+0 s below: to find the run in server logs)")
        if lat.broker_uptime is not None and lat.broker_uptime < BROKER_WARM_SECONDS:
            say(
                f"  broker   started {lat.broker_uptime:.0f} s before: its JVM takes most of a"
                " core for its first 15 s or so, and runs in the first minutes after a start"
                " had slower tails here (bench/README.md)"
            )
        for what, values in (
            ("produce->effect  ", lat.effect_ms),
            ("produce->complete", lat.complete_ms),
            ("produce->broker  ", lat.broker_ms),
            ("broker->complete ", lat.after_broker_ms),
        ):
            if not values:
                continue
            shown = "  ".join(f"p{q * 100:g} {v:6.1f}" for q, v in values.items())
            say(f"  {what} ms  {shown.replace('p100', 'max')}")
        say(f"  complete: {lat.complete_by}")
        if lat.slowest is not None:
            say(
                f"  slowest  0.5 s of records produced at +{lat.slowest[0]:.1f} s:"
                f" median {lat.slowest[1]:.1f} ms"
            )
        if lat.p99_by_5s:
            shown = "  ".join(f"+{at:.0f}s {p99:.0f}" for at, p99 in lat.p99_by_5s)
            say(f"  p99 ms by 5 s of produce time: {shown}")
        if lat.broker_p99_by_5s:
            shown = "  ".join(f"+{at:.0f}s {p99:.0f}" for at, p99 in lat.broker_p99_by_5s)
            say(f"  p99 ms of produce->broker alone:  {shown}")
        # Reports built without the speed samples have none: zip stops short.
        pairs = zip(lat.p99_by_5s, lat.slowdown_by_5s, strict=False)
        slowdowns = [(at, x) for (at, _), x in pairs if x]
        if slowdowns:
            shown = "  ".join(f"+{at:.0f}s {x:.1f}" for at, x in slowdowns)
            say(f"  machine  slowdown by 5 s (a fixed loop's CPU time / its fastest): {shown}")
        pairs_cpu = zip(lat.p99_by_5s, lat.cpu_by_5s, strict=False)
        cpu = [(at, c) for (at, _), c in pairs_cpu if c is not None]
        if cpu:
            shown = "  ".join(f"+{at:.0f}s {svc:.0f}+{pg:.0f}" for at, (svc, pg, _) in cpu)
            say(f"  CPU      µs per record offered by 5 s (service+its Postgres): {shown}")
            shown = "  ".join(f"+{at:.0f}s {cores:.2f}" for at, (_, _, cores) in cpu)
            say(f"  machine  cores busy by 5 s (every process): {shown}")
        pairs_thread = zip(lat.p99_by_5s, lat.thread_by_5s, strict=False)
        threads = [(at, t) for (at, _), t in pairs_thread if t is not None]
        if threads:
            shown = "  ".join(f"+{at:.0f}s {run:.2f}/{wait:.2f}" for at, (run, wait) in threads)
            say(f"  thread   service's busiest, share on a CPU/waiting for one, by 5 s: {shown}")
        if lat.disk_peak_at is not None:
            say(
                f"  disk     busiest 0.5 s of the machine's writes at +{lat.disk_peak_at:.1f} s"
                f" of offering: {lat.disk_peak / 1e6:,.0f} MB/s (a write-back burst there"
                " holds WAL flushes: bench/README.md)"
            )
        if lat.duplicates or lat.missing or lat.problems:
            say(f"  PROBLEM: duplicates {lat.duplicates}, missing {lat.missing} {lat.problems}")
    every = [r for results in rounds for r in results]
    ours = [r for r in every if r.system.startswith("onceflow")]
    bad = [r for r in every if r.problems or (r in ours and (r.duplicates or r.missing))]
    say("")
    for system, ratios in _ratios(rounds).items():
        ratio = statistics.median(ratios)
        verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
        if len(ratios) > 1:
            shown = ", ".join(f"{r:.3f}" for r in ratios)
            say(f"rounds     {system} / plain batched, round by round: {shown}")
            what = f"median of {len(ratios)} rounds"
        else:
            what = "one round"
        say(
            f"target     {system} / plain batched = {ratio:.3f} ({what}; >= {TARGET_RATIO}):"
            f" {verdict}"
        )
    for system, runs in _p99s(latencies).items():
        p99 = statistics.median(p for _, p in runs)
        verdict = "met" if p99 < TARGET_P99_MS else "NOT met"
        rates = sorted({f"{offered:,.0f}/s" for offered, _ in runs})
        what = ""
        if len(runs) > 1:
            met = sum(p < TARGET_P99_MS for _, p in runs)
            shown = ", ".join(f"{p:.1f}" for _, p in runs)
            say(f"runs       {system}: p99 produce->complete run by run: {shown} ms")
            what = f" (median of {len(runs)} runs, {met} of them under the target)"
        say(
            f"target     {system}: p99 produce->complete at {', '.join(rates)} = {p99:.1f} ms"
            f"{what} (< {TARGET_P99_MS:.0f} ms): {verdict}"
        )
    if bad or any(lat.duplicates or lat.missing or lat.problems for _, lat in latencies):
        say("CHECK FAILED: see PROBLEM lines above")
        return 1
    say("check      every record: exactly one effect row; Onceflow: one SUCCESS workflow each")
    return 0


def _p99s(
    latencies: Sequence[tuple[str, LatencyResult]],
) -> dict[str, list[tuple[float, float]]]:
    """Each system's latency runs as (offered rate, p99 produce->complete ms), in order."""
    runs: dict[str, list[tuple[float, float]]] = {}
    for system, lat in latencies:
        if lat.complete_ms:
            runs.setdefault(system, []).append((lat.offered, lat.complete_ms[0.99]))
    return runs


def _ratios(rounds: Sequence[Sequence[RunResult]]) -> dict[str, list[float]]:
    """Each Onceflow system's rate over plain batched's of the same round."""
    ratios: dict[str, list[float]] = {}
    for results in rounds:
        base = _base(results)
        if not base:
            continue
        for r in results:
            if r.system.startswith("onceflow"):
                ratios.setdefault(r.system, []).append(r.rate / base)
    return ratios


def scaling(rows: Sequence[tuple[int, int, RunResult]]) -> int:
    say("")
    say(
        f"{'partitions':>10} {'services':>8} {'events/s':>9} {'commits/ev':>10}"
        f" {'RSS MB/svc':>10} {'CPU us/ev svc+pg':>16} {'WAL B/ev':>8} {'busy':>5}"
        f" {'dup/missing':>11}"
    )
    failed = False
    for partitions, services, r in rows:
        cpu = f"{_us(r.proc_cpu, r.events)}+{_us(r.pg_cpu, r.events)}"
        busy = "-" if r.busy is None else f"{r.busy * 100:.0f}%"
        say(
            f"{partitions:>10} {services:>8} {r.rate:>9,.0f} {_ratio(r.commits, r.events):>10}"
            f" {_mb(r.peak_rss):>10} {cpu:>16} {_wal(r):>8} {busy:>5}"
            f" {f'{r.duplicates}/{r.missing}':>11}"
        )
        failed = failed or bool(r.problems or r.duplicates or r.missing)
    say("  RSS: the largest service's peak; CPU: all services + their Postgres backends")
    return 1 if failed else 0


def backlog(r: BacklogResult, records: int) -> int:
    samples = r.samples
    if not samples:
        say("backlog: no samples")
        return 1
    start = next((s for s in samples if s[2] > 0), samples[0])
    peak = max(samples, key=lambda s: s[1])
    end = samples[-1]
    say("")
    say(
        f"backlog    {records:,} records; service sampled every second for {end[0]:.0f}s"
        f" ({'finished' if r.finished else 'stopped before the end'})"
    )
    say(
        f"  RSS MB   start {start[1] / 2**20:.0f} (at {start[0]:.0f}s, first effect)"
        f"  peak {peak[1] / 2**20:.0f} (at {peak[0]:.0f}s; VmHWM {_mb(r.peak_rss)})"
        f"  end {end[1] / 2**20:.0f}"
    )
    steady = [s for s in samples if s[0] >= start[0] + 10]
    if len(steady) >= 2:
        slope = (steady[-1][1] - steady[0][1]) / 2**20 / ((steady[-1][0] - steady[0][0]) / 60)
        say(f"  RSS drift after the first 10 s of work: {slope:+.1f} MB/min")
    curve = "  ".join(
        f"{t:.0f}s:{rss / 2**20:.0f}" for t, rss, _ in samples[:: max(1, len(samples) // 12)]
    )
    say(f"  curve    {curve}")
    say(f"  done     {end[2]:,} effects, {r.rate:,.0f} events/s since the first")
    say(
        f"  check    duplicates {r.duplicates}; {r.effects:,} effects, {r.success:,} SUCCESS"
        " workflows after the stop"
    )
    for p in r.problems:
        say(f"  PROBLEM: {p}")
    return 1 if r.duplicates or r.problems else 0


def _in_services(services: int) -> str:
    return "" if services == 1 else f" in {services} services"
