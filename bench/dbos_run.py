"""DBOS Transact's Kafka consumer on the benchmark's topic, when dbos is installed."""

from __future__ import annotations

import importlib.util
import sys
import time

import psycopg

from bench import infra, workload
from bench.infra import STATE_DIR, Poller, Services
from bench.measure import CpuMeter
from bench.runs import RunResult, ServiceGroup, Topic, check_effects, service_env


def installed() -> bool:
    return importlib.util.find_spec("dbos") is not None


def run_dbos(svc: Services, topic: Topic, *, timeout: float = 1800.0) -> RunResult:
    name, group = infra.unique("ofbench_dbos_"), infra.unique("ofbench-dbos-")
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with infra.fresh_database(svc.server_url, name) as url:
        before = infra.counters(svc.server_url, name)
        env = service_env(
            {
                "OFBENCH_DATABASE_URL": url,
                "OFBENCH_KAFKA": svc.bootstrap,
                workload.ENV_TOPIC: topic.name,
                workload.ENV_GROUP: group,
            }
        )
        log = STATE_DIR / f"{name}.log"
        services = ServiceGroup(env, [log], [sys.executable, "-m", "bench.apps.dbos_app"])
        meter = CpuMeter(name)
        meter.watch(services.pids[0])
        poller = Poller(url)
        progress = infra.Progress()
        started = time.monotonic()
        first: float | None = None
        last_change, last_done = time.monotonic(), -1
        try:
            while True:
                services.check_alive()
                done = poller.effects()
                if done == 0:
                    meter.start()
                else:
                    meter.sample()
                    first = first or time.monotonic()
                if done != last_done:
                    last_change, last_done = time.monotonic(), done
                rate = done / (time.monotonic() - first) if first and done else 0.0
                progress.show(f"dbos: {done:,}/{topic.records:,} effects ({rate:,.0f}/s)")
                if done >= topic.records:
                    break
                if time.monotonic() - started > timeout or time.monotonic() - last_change > 120:
                    break  # reported as missing below
                time.sleep(0.5)
            end = time.monotonic()
            progress.done()
            peak = services.peak_rss()
            meter.stop()
        finally:
            poller.close()
            services.stop()
        delta = infra.counters(svc.server_url, name) - before
        result = RunResult("dbos", last_done, end - (first or end) + 0.25)
        result.note = "timed by polling (±0.5s); started with defaults"
        result.commits = delta.commits - poller.statements
        result.rollbacks, result.wal_bytes = delta.rollbacks, delta.wal
        result.peak_rss, result.busy = peak, meter.machine_busy
        result.proc_cpu, result.pg_cpu = meter.process_seconds, meter.postgres_seconds
        with psycopg.connect(url, autocommit=True) as conn:
            check_effects(conn, topic.ends, result)
    return result
