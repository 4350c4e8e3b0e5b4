"""Onceflow's throughput, latency and memory against plain Kafka consumers.

    python -m bench.throughput              # N=200,000: the table below, then latency
    python -m bench.throughput --quick      # N=20,000, for development
    python -m bench.throughput --scaling    # 1-3 services; 1, 4, 16 partitions
    python -m bench.throughput --backlog 1000000 --duration 60

Starts (or reuses) Postgres and Kafka (consumers.testing._services), creates
a topic, produces N records of ~200 bytes JSON with a few hundred keys, and
runs one after another on it, each with a fresh group and a fresh database:

1. a plain confluent-kafka consumer, at-least-once, one batched INSERT and
   one commit per poll;
2. the same with one autocommit INSERT per event (on the first 20,000
   records by default: it is slow);
3. Onceflow, `onceflow run bench.apps.onceflow_app:app` as a real process:
   two plain steps and a transaction step inserting the event's row;
4. DBOS Transact's Kafka consumer on the same work, if `dbos` is installed;
5. on request (`--systems ...,floor,floor-compact`), the floors: Onceflow's
   rows written without an engine, one transaction per poll (the ceiling of
   its data model), and only a row per workflow ID with the effect.

Each run is timed from its first record consumed to its last effect (for
Onceflow: its last workflow completed), then checked: every record has one
effect row (and one SUCCESS workflow with its three checkpoints), so a fast
wrong answer cannot pass. Then Onceflow's produce→complete latency at half
its measured rate. Figures are printed, never asserted (DESIGN.md §8).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # `python bench/throughput.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import backlog, dbos_run, infra, latency, measure, report
from bench.infra import ROOT, Services, say
from bench.runs import OnceflowOptions, RunResult, Topic, run_onceflow, run_plain

SYSTEMS = ("plain-batched", "plain-per-event", "onceflow", "onceflow-workers", "dbos")
# The Onceflow rows: system, the subscription's `execution` (None: the
# default, what a user gets), and how the run is announced.
ONCEFLOW_MODES = (
    ("onceflow", None, 'defaults (execution="auto")'),
    ("onceflow-workers", "workers", 'execution="workers"'),
    ("onceflow-inline", "inline", 'execution="inline"'),
)
# Not run unless named in --systems: Onceflow forced inline (what "auto" does
# with this quick handler); Onceflow's rows written the cheapest way (one
# transaction per poll, no engine), the ceiling of Onceflow's data model; and the
# compact floor: only a row per workflow ID and the effect (bench/apps/floor.py).
EXTRA_SYSTEMS = ("onceflow-inline", "floor", "floor-compact")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.quick:
        args.records = args.records or 20_000
        args.latency_seconds = args.latency_seconds or 10.0
    args.records = args.records or 200_000
    # A minute, not less: the kernel writes a file's dirty pages back about
    # 30 s after it was first dirtied, in one burst that holds WAL flushes
    # (bench/README.md). A shorter window ends before it, and its p99 would
    # leave out what a service running for hours sees every half minute.
    args.latency_seconds = args.latency_seconds or 60.0
    extra_env = dict(kv.split("=", 1) for kv in args.env)
    svc = infra.services()
    report.header(svc, args, extra_env)
    _check_quiet()
    try:
        if args.backlog:
            result = backlog.run_backlog(
                svc,
                args.partitions,
                args.backlog,
                args.duration,
                extra_env=extra_env,
                source=args.source.resolve(),
            )
            return report.backlog(result, args.backlog)
        if args.scaling:
            return _scaling(svc, args, extra_env)
        return _compare(svc, args, extra_env)
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.throughput", description=__doc__.splitlines()[0]
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="N=20,000 and 10 s of latency")
    mode.add_argument("--scaling", action="store_true", help="1-3 services; 1, 4, 16 partitions")
    mode.add_argument("--backlog", type=int, metavar="N", help="RSS of one service on N records")
    p.add_argument("-n", "--records", type=int, default=0, help="records (default 200,000)")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument(
        "--per-event-records",
        type=int,
        default=20_000,
        help="records for the plain per-event consumer (0: all; default 20,000)",
    )
    p.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help=f"comma-separated, from {', '.join(SYSTEMS + EXTRA_SYSTEMS)} (default: all but onceflow-inline and the floors)",
    )
    p.add_argument(
        "--rate", type=float, default=0.0, help="latency load, events/s (default: half Onceflow's)"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the systems this many times, interleaved; ratios per round and their median",
    )
    p.add_argument("--latency-seconds", type=float, default=0.0, help="default 60 (quick: 10)")
    p.add_argument(
        "--latency-runs",
        type=int,
        default=1,
        metavar="K",
        help="latency runs per Onceflow mode, one after another (default 1): each run's p99"
        " and their median",
    )
    p.add_argument("--no-latency", action="store_true")
    p.add_argument(
        "--latency-services",
        type=int,
        default=1,
        metavar="K",
        help="consumer services in the latency run's group (default 1)",
    )
    p.add_argument("--duration", type=float, default=60.0, help="--backlog: seconds to sample")
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the Onceflow service (e.g. ONCEFLOW_WORKERS=128)",
    )
    p.add_argument(
        "--py-spy", type=float, default=0.0, metavar="S", help="profile the service S seconds"
    )
    p.add_argument("--py-spy-args", default="--gil", help="py-spy record options (default --gil)")
    p.add_argument(
        "--keep", action="store_true", help="keep the Onceflow runs' databases (latency's too)"
    )
    p.add_argument(
        "--source",
        type=Path,
        default=ROOT,
        help="run the Onceflow service from another checkout (to compare a change)",
    )
    p.add_argument(
        "--statements",
        action="store_true",
        help="print Onceflow's top SQL statements (the server needs pg_stat_statements)",
    )
    return p


# Busy share of the idle machine above which the figures are flagged.
QUIET = 0.10


def _check_quiet() -> None:
    """Say how busy the machine is before any run: other load (a broker left
    running by a test suite, say) takes CPU from every system measured."""
    busy, top = measure.background_load()
    say(f"machine    {busy:.0%} busy before the runs")
    if busy > QUIET:
        say("WARNING    other load will slow every system; the ratios hold better than rates")
        for what, share in top:
            say(f"           {share:5.0%} of a core: {what}")


def _topic(svc: Services, partitions: int, records: int, label: str) -> Topic:
    name = infra.unique(f"ofbench-{partitions}p-")
    infra.create_topic(svc.bootstrap, name, partitions)
    if records:
        took = infra.produce(svc.bootstrap, name, records, label=label)
        say(f"produced   {records:,} records to {name} in {took:.1f}s ({records / took:,.0f}/s)")
    return Topic(name, partitions, infra.end_offsets(svc.bootstrap, name, partitions))


def _compare(svc: Services, args: argparse.Namespace, extra_env: dict[str, str]) -> int:
    systems = {s.strip() for s in args.systems.split(",") if s.strip()}
    unknown = systems - set(SYSTEMS) - set(EXTRA_SYSTEMS)
    if unknown:
        choices = ", ".join(SYSTEMS + EXTRA_SYSTEMS)
        raise SystemExit(f"unknown systems {sorted(unknown)}; choose from {choices}")
    if args.rounds < 1:
        raise SystemExit(f"--rounds must be at least 1, not {args.rounds}")
    if args.latency_runs < 1:
        raise SystemExit(f"--latency-runs must be at least 1, not {args.latency_runs}")
    if not 1 <= args.latency_services <= args.partitions:
        raise SystemExit(
            f"--latency-services must be 1 to --partitions ({args.partitions}),"
            f" not {args.latency_services}"
        )
    topic = _topic(svc, args.partitions, args.records, "produce")
    if topic.records != args.records:
        raise SystemExit(f"topic holds {topic.records} records, {args.records} produced")
    rounds: list[list[RunResult]] = []
    latencies: list[tuple[str, latency.LatencyResult]] = []
    # Each Onceflow mode that ran, and the environment its service runs with.
    modes: list[tuple[RunResult, dict[str, str]]] = []
    # Deleted after the last measurement: the broker removes a deleted topic's
    # files a while later, and 500 MB of them going mid-run slowed a latency
    # window (bench/README.md, "Measured choices").
    topics = [topic.name]
    try:
        for number in range(1, args.rounds + 1):
            if args.rounds > 1:
                say(f"round      {number} of {args.rounds}")
            modes.clear()
            rounds.append(_round(svc, topic, systems, args, extra_env, modes))
        # Latency of each Onceflow mode at half the rate it reached (or --rate).
        for run, env in [] if args.no_latency else modes:
            reached = statistics.median(
                r.rate for one in rounds for r in one if r.system == run.system
            )
            rate = args.rate or max(1.0, round(reached / 2))
            for number in range(1, args.latency_runs + 1):
                of = f" (run {number} of {args.latency_runs})" if args.latency_runs > 1 else ""
                say(
                    f"latency    {run.system} at {rate:,.0f} events/s"
                    f" for {args.latency_seconds:.0f}s{of}"
                )
                latencies.append(
                    (
                        run.system,
                        latency.run_latency(
                            svc,
                            args.partitions,
                            rate,
                            args.latency_seconds,
                            extra_env=env,
                            keep=args.keep,
                            services=args.latency_services,
                            source=args.source.resolve(),
                            topics=topics,
                        ),
                    )
                )
    finally:
        infra.delete_topics(svc.bootstrap, topics)
    return report.compare(rounds, latencies, topic, args)


def _round(
    svc: Services,
    topic: Topic,
    systems: set[str],
    args: argparse.Namespace,
    extra_env: dict[str, str],
    modes: list[tuple[RunResult, dict[str, str]]],
) -> list[RunResult]:
    """Each chosen system once, one after another, on the same records."""
    results: list[RunResult] = []
    if "plain-batched" in systems:
        say("run        plain consumer, one batched INSERT per poll (at-least-once)")
        results.append(run_plain(svc, topic, "batched", topic.ends))
        report.line(results[-1])
    if "plain-per-event" in systems:
        count = args.per_event_records or topic.records
        say(f"run        plain consumer, one autocommit INSERT per event ({count:,} records)")
        results.append(run_plain(svc, topic, "per-event", topic.first(count)))
        report.line(results[-1])
    if "floor" in systems:
        say("run        floor: Onceflow's rows (workflow, 3 steps, effect), one tx per poll")
        results.append(run_plain(svc, topic, "floor", topic.ends))
        report.line(results[-1])
    if "floor-compact" in systems:
        say("run        floor-compact: a row per workflow ID + the effect, one tx per poll")
        results.append(run_plain(svc, topic, "floor-compact", topic.ends))
        report.line(results[-1])
    for system, execution, what in ONCEFLOW_MODES:
        if system not in systems:
            continue
        say(f"run        onceflow service, {what} (2 steps + 1 transaction step, exactly-once)")
        env = {**extra_env, "OFBENCH_EXECUTION": execution} if execution else extra_env
        opts = OnceflowOptions(
            extra_env=env,
            keep=args.keep,
            py_spy=args.py_spy,
            py_spy_args=tuple(args.py_spy_args.split()),
            statements=args.statements,
            source=args.source.resolve(),
        )
        results.append(run_onceflow(svc, topic, system, opts))
        modes.append((results[-1], env))
        report.line(results[-1])
    if "dbos" in systems:
        if dbos_run.installed():
            say("run        DBOS Transact Kafka consumer (same work)")
            results.append(dbos_run.run_dbos(svc, topic))
            report.line(results[-1])
        else:
            say("dbos: not installed")
    return results


def _scaling(svc: Services, args: argparse.Namespace, extra_env: dict[str, str]) -> int:
    cases = [(4, 1), (4, 2), (4, 3), (1, 1), (16, 1)]
    say(
        "scaling    services start on an empty topic; once the group is stable,"
        f" {args.records:,} records are produced at full speed"
    )
    rows: list[tuple[int, int, RunResult]] = []
    for partitions, services in cases:
        topic = _topic(svc, partitions, 0, "")
        try:
            label = f"{partitions}p x {services} service{'s' if services > 1 else ''}"
            say(f"run        onceflow, {label}")
            opts = OnceflowOptions(
                services=services,
                extra_env=extra_env,
                produce_after_stable=args.records,
                source=args.source.resolve(),
            )
            rows.append((partitions, services, run_onceflow(svc, topic, label, opts)))
            report.line(rows[-1][2])
        finally:
            infra.delete_topics(svc.bootstrap, [topic.name])
    return report.scaling(rows)


if __name__ == "__main__":
    sys.exit(main())
