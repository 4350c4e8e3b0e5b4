"""Chaos run: exactly-once under real faults, judged by an independent checker.

    python -m bench.chaos [--records 100000] [--faults 25] [--kinds kill,zombie,...]

In the manner of Jepsen's fault runs and Kafka's own exactly-once system
tests: real processes, real kills, and a checker that trusts nothing the
system says about itself.

- A fresh topic (6 partitions) and a producer thread writing keyed records
  (a few hundred keys) at a steady rate, so faults hit live traffic. Each
  record carries its event ID and its sequence number within its key.
- Three consumer services (`onceflow run bench.chaos_app:app`) in one group,
  as subprocesses; their handler runs two plain steps and a transaction step.
- Faults at random times, one at a time, each logged with its time:
  `kill` (SIGKILL a service, restart it), `zombie` (SIGSTOP a service past its
  lease and Kafka session, every other time at a moment it holds an effect not
  yet committed, then SIGCONT: it must find itself fenced),
  `pg_restart` and `kafka_restart` (the native test services, down for a
  moment), `storm` (services joining the group and leaving it quickly).
- When production and faults are over, the run waits for the backlog to drain,
  stops the services and checks: every Kafka record (read back from the topic)
  has one SUCCESS workflow, completed once (a trigger on the workflows table
  logs every completion), and one effect row matching it; each key's effects
  committed in the key's order. Plain-step re-runs are allowed and counted.

Exit status 1 on any missing record, duplicate completion, duplicate effect or
order violation; the last line is one summary of figures. `run_chaos` is the
machinery, shared with tests/integration/chaos.

The parts: `bench.chaos_config` (what to run), `bench.chaos_check` (the tables and
the independent checker), `bench.chaos_faults` (the services and the faults done
to them); this module drives the run, produces the records and reads the options.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bench.chaos_check import Findings, check, create_database, drained
from bench.chaos_config import KINDS, ChaosConfig, ChaosError, Say
from bench.chaos_faults import Chaos, Fault, native_services, schedule
from bench.chaos_feeder import Feeder
from consumers.testing import create_topic
from consumers.testing._services import (
    ENV_SERVICES_DIR,
    ServiceUnavailable,
    kafka_bootstrap,
    postgres_url,
)

__all__ = [
    "KINDS",
    "ChaosConfig",
    "ChaosError",
    "ChaosResult",
    "Fault",
    "Findings",
    "check",
    "discard",
    "main",
    "report",
    "run_chaos",
]

CHAOS_SERVICES_DIR = Path.home() / ".cache" / "onceflow" / "chaos-services"


@dataclass
class ChaosResult:
    config: ChaosConfig
    seed: int
    findings: Findings
    faults: list[Fault]
    acked: int  # records the producer had acknowledged
    drain_after_last_fault: float | None  # None: it did not drain
    elapsed: float
    unexpected_exits: list[str]
    database_url: str  # kept when the run fails, or with `keep`
    topic: str
    group: str
    log_dir: Path
    errors: list[str] = field(default_factory=list)  # the run's own failures

    def problems(self) -> list[str]:
        out = list(self.errors) + self.findings.problems()
        if self.acked != self.config.records:
            out.append(f"the producer had {self.acked} of {self.config.records} records acked")
        elif self.findings.produced != self.acked:
            out.append(f"the topic holds {self.findings.produced} records, {self.acked} acked")
        if self.drain_after_last_fault is None:
            out.append(f"the work did not drain within {self.config.drain_timeout:.0f}s")
        return out

    @property
    def ok(self) -> bool:
        return not self.problems()

    def summary(self) -> str:
        f = self.findings
        kinds = Counter(x.kind for x in self.faults)
        mix = " ".join(f"{k}={kinds[k]}" for k in KINDS if k in self.config.kinds)
        drain = (
            "never"
            if self.drain_after_last_fault is None
            else f"{self.drain_after_last_fault:.1f}s"
        )
        return (
            f"chaos: produced={f.produced} success={f.success} missing={len(f.missing)} "
            f"dup_completions={f.dup_completions} dup_effects={f.dup_effects} "
            f"order_violations={f.order_violations} plain_reruns={f.plain_reruns} moved={f.moved} "
            f"faults={len(self.faults)} ({mix}) unexpected_exits={len(self.unexpected_exits)} "
            f"drain_after_last_fault={drain} elapsed={self.elapsed:.1f}s"
        )


def discard(result: ChaosResult, *, server_url: str, bootstrap: str) -> None:
    """Drop a run's database and delete its topic."""
    name = str(conninfo_to_dict(result.database_url)["dbname"])
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics([result.topic], operation_timeout=30).values():
        future.result(60)


def run_chaos(
    config: ChaosConfig, *, server_url: str, bootstrap: str, say: Say = print
) -> ChaosResult:
    """Run the chaos run against these services and return what the checker found.

    Services, producer and faults are always cleaned up: every consumer
    service is killed and Postgres and Kafka are running again on return.
    """
    unknown = set(config.kinds) - set(KINDS)
    if unknown or not config.kinds:
        raise ChaosError(f"fault kinds are {', '.join(KINDS)}; got {', '.join(config.kinds)}")
    if min(config.records, config.partitions, config.keys, config.services) < 1:
        raise ChaosError("records, partitions, keys and services must each be at least 1")
    if config.rate <= 0 or config.faults < 0:
        raise ChaosError("rate must be positive and faults not negative")
    restarts = {"pg_restart", "kafka_restart"} & set(config.kinds)
    natives = native_services(server_url, bootstrap) if restarts else None
    seed = config.seed if config.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    name = f"chaos_{uuid.uuid4().hex[:10]}"
    log_dir = config.log_dir or Path.home() / ".cache" / "onceflow" / "chaos" / name
    log_dir.mkdir(parents=True, exist_ok=True)
    topic, group = name, f"{name}_group"
    say(
        f"chaos: seed {seed}, {config.records} records at {config.rate:g}/s over {config.keys} "
        f"keys, {config.partitions} partitions, {config.services} services, {config.faults} "
        f"faults of {','.join(config.kinds)}; logs in {log_dir}"
    )
    database_url = make_conninfo(server_url, dbname=name)
    env: dict[str, str | None] = {
        "ONCEFLOW_DATABASE_URL": database_url,
        "ONCEFLOW_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "ONCEFLOW_LEASE": str(config.lease),
        "ONCEFLOW_HEARTBEAT": str(config.heartbeat),
        "ONCEFLOW_SCHEMA": None,
        "ONCEFLOW_FAULT": None,
        "CHAOS_TOPIC": topic,
        "CHAOS_GROUP": group,
        "CHAOS_SESSION_TIMEOUT_MS": str(int(config.session_timeout * 1000)),
        "CHAOS_COMMIT_INTERVAL_MS": str(int(config.commit_interval * 1000)),
        "CHAOS_WORK_SECONDS": str(config.work_seconds),
        "CHAOS_EXECUTION": config.execution,
    }
    chaos = Chaos(config, env, log_dir, rng, say, natives)
    feeder = Feeder(bootstrap, topic, config, seed, log_dir / "producer.log")
    errors: list[str] = []
    drain: float | None = None
    findings = Findings()
    started = t0 = time.monotonic()
    try:
        create_database(server_url, name)
        create_topic(bootstrap, topic, partitions=config.partitions)
        chaos.start()
        say(f"chaos: {config.services} services joined group {group}; producing")
        t0 = time.monotonic()
        feeder.start()
        for at, kind in schedule(config, rng):
            while time.monotonic() < t0 + at:
                chaos.supervise(time.monotonic() - t0)
                time.sleep(0.2)
            chaos.inject(kind, t0)
            chaos.supervise(time.monotonic() - t0)
        while feeder.is_alive():
            chaos.supervise(time.monotonic() - t0)
            feeder.join(0.5)
        # The drain counts from the end of the last fault (or of production, with none).
        last = time.monotonic()
        if chaos.faults:
            last = t0 + chaos.faults[-1].at + chaos.faults[-1].took
        for note in feeder.replacements:
            say(f"chaos: {note}")
        say(f"chaos: {feeder.acked} records produced in {time.monotonic() - t0:.0f}s; draining")
        deadline = time.monotonic() + config.drain_timeout
        while time.monotonic() < deadline:
            chaos.supervise(time.monotonic() - t0)
            try:
                if drained(database_url, bootstrap, topic, group):
                    drain = time.monotonic() - last
                    break
            except (psycopg.OperationalError, KafkaException):
                pass  # a service still coming back: look again
            time.sleep(0.5)
        chaos.stop()  # before checking: a late zombie write would show
        findings = check(database_url, bootstrap, topic, group)
    except BaseException:
        say(f"chaos: the run broke off; its database {database_url}, logs in {log_dir}")
        raise
    finally:
        feeder.stopping.set()
        chaos.close()
        if natives is not None:
            for native in natives:
                native.start()  # a no-op when it runs
        feeder.join(30)
        errors += [f"producer: {e}" for e in feeder.errors[:5]]
        result = ChaosResult(
            config,
            seed,
            findings,
            chaos.faults,
            feeder.acked,
            drain,
            time.monotonic() - t0,
            chaos.unexpected_exits,
            database_url,
            topic,
            group,
            log_dir,
            errors,
        )
        if result.ok and not config.keep:
            discard(result, server_url=server_url, bootstrap=bootstrap)
    say(f"chaos: setup and run took {time.monotonic() - started:.0f}s")
    return result


def report(result: ChaosResult, say: Say = print) -> None:
    """The fault log, the problems found, and the summary line last."""
    say("chaos: fault log (seconds since production started):")
    for fault in result.faults:
        say(f"  {fault.line()}")
    for line in result.unexpected_exits:
        say(f"chaos: unexpected exit: {line}")
    for problem in result.problems():
        say(f"chaos: FAILED: {problem}")
    if not result.ok:
        say(f"chaos: kept database {result.database_url} and logs in {result.log_dir}")
    say(result.summary())


def main(argv: Sequence[str] | None = None) -> int:
    defaults = ChaosConfig()
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--records", type=int, default=defaults.records)
    parser.add_argument("--partitions", type=int, default=defaults.partitions)
    parser.add_argument("--keys", type=int, default=defaults.keys)
    parser.add_argument("--services", type=int, default=defaults.services)
    parser.add_argument("--faults", type=int, default=defaults.faults, help="how many faults")
    parser.add_argument("--seed", type=int, default=None, help="repeat a run's choices")
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help=f"comma list of {', '.join(KINDS)}"
    )
    parser.add_argument("--rate", type=float, default=defaults.rate, help="records a second")
    parser.add_argument("--lease", type=float, default=defaults.lease)
    parser.add_argument("--heartbeat", type=float, default=defaults.heartbeat)
    parser.add_argument("--drain-timeout", type=float, default=defaults.drain_timeout)
    parser.add_argument("--work-seconds", type=float, default=defaults.work_seconds)
    parser.add_argument(
        "--execution",
        choices=("auto", "workers", "inline"),
        default=defaults.execution,
        help="the subscription's execution mode",
    )
    parser.add_argument(
        "--commit-interval",
        type=float,
        default=defaults.commit_interval,
        help="seconds between the consumers' offset commits",
    )
    parser.add_argument("--log-dir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the database and topic")
    parser.add_argument(
        "--services-dir",
        type=Path,
        default=None,
        help="state directory of the native Postgres and Kafka the run starts (or reuses) and "
        f"restarts; default ${ENV_SERVICES_DIR}, else {CHAOS_SERVICES_DIR}: services of the "
        "run's own, so that restarting them disturbs no test session on the machine",
    )
    args = parser.parse_args(argv)
    os.environ[ENV_SERVICES_DIR] = str(
        args.services_dir or os.environ.get(ENV_SERVICES_DIR) or CHAOS_SERVICES_DIR
    )
    config = ChaosConfig(
        records=args.records,
        partitions=args.partitions,
        keys=args.keys,
        services=args.services,
        faults=args.faults,
        kinds=tuple(k.strip() for k in args.kinds.split(",") if k.strip()),
        rate=args.rate,
        seed=args.seed,
        lease=args.lease,
        heartbeat=args.heartbeat,
        drain_timeout=args.drain_timeout,
        work_seconds=args.work_seconds,
        execution=args.execution,
        commit_interval=args.commit_interval,
        log_dir=args.log_dir,
        keep=args.keep,
    )
    try:
        server_url, bootstrap = postgres_url(), kafka_bootstrap()
        result = run_chaos(config, server_url=server_url, bootstrap=bootstrap)
    except (ChaosError, ServiceUnavailable) as exc:
        print(f"chaos: error: {exc}", file=sys.stderr)
        return 2
    report(result)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
