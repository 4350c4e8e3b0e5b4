"""CPU per event of the inline path alone, without Kafka: a quick, steady figure.

    python -m bench.inline_micro                 # 20,000 records in batches of 250
    python -m bench.inline_micro -n 50000 --profile out.prof

Builds the benchmark's app (bench/apps/onceflow_app.py: two plain steps and
a transaction step, execution="inline"), feeds its group consumer's `_ingest`
with in-memory records shaped like the benchmark's, on a fresh database, and
prints the CPU microseconds per event of this process and of its Postgres
backends. The garbage collector is set as the service sets it. Kafka's own cost (polling, storing offsets) is left out, so the
figure isolates what Onceflow adds per event; it is not comparable with the
throughput table's. Figures are printed, never asserted (DESIGN.md §8).
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/inline_micro.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from bench import infra, measure, workload

PARTITIONS = 4


class FakeMessage:
    """What `_ingest` reads of a confluent-kafka Message."""

    def __init__(self, topic: str, partition: int, offset: int, key: bytes, value: bytes) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._key, self._value = key, value

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000 + self._offset)

    def headers(self) -> None:
        return None

    def error(self) -> None:
        return None


def batches(topic: str, records: int, size: int) -> list[list[Any]]:
    """Records spread over the partitions like a producer keyed by `key_of`."""
    offsets = [0] * PARTITIONS
    messages: list[Any] = []
    for i in range(records):
        key = workload.key_of(i).encode()
        partition = hash(key) % PARTITIONS
        messages.append(
            FakeMessage(topic, partition, offsets[partition], key, workload.record_value(i))
        )
        offsets[partition] += 1
    return [messages[i : i + size] for i in range(0, len(messages), size)]


def run(records: int, size: int, profile: str | None, locale: str | None = None) -> None:
    svc = infra.services()
    name = infra.unique("ofbench_micro_")
    topic = "ofbench-micro"
    with infra.fresh_database(svc.server_url, name, locale=locale) as url:
        os.environ.update(
            {
                "ONCEFLOW_DATABASE_URL": url,
                "ONCEFLOW_KAFKA_BOOTSTRAP_SERVERS": svc.bootstrap,
                workload.ENV_TOPIC: topic,
                workload.ENV_GROUP: "ofbench-micro",
                "OFBENCH_EXECUTION": "inline",
            }
        )
        app_module = importlib.import_module("bench.apps.onceflow_app")
        from consumers._gc import tune_for_service
        from consumers._group import GroupConsumer

        app = app_module.app
        app.engine.launch()
        try:
            gc = GroupConsumer(app.engine, "ofbench-micro", app.subscriptions, {})
            gc._topic_ids[topic] = "AAAAAAAAAAAAAAAAAAAAAA"
            gc._assigned = {(topic, p) for p in range(PARTITIONS)}
            work = batches(topic, records, size)
            gc._ingest(work[0])  # warm up: connections, prepared statements
            gc._finish_sent()
            # The collector as the service sets it (KafkaApp.run; $ONCEFLOW_GC_THRESHOLD).
            tune_for_service()
            backends0 = measure.backend_cpu(name)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            profiler = cProfile.Profile() if profile else None
            if profiler:
                profiler.enable()
            for batch in work[1:]:
                gc._ingest(batch)
            gc._finish_sent()  # the last batch's COMMIT
            if profiler:
                profiler.disable()
                profiler.dump_stats(profile)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            backends = measure.backend_cpu(name)
            pg = sum(backends.get(pid, 0.0) - backends0.get(pid, 0.0) for pid in backends)
            events = sum(len(b) for b in work[1:])
            stats = gc.stats
            print(
                f"{events:,} events in {wall:.2f}s = {events / wall:,.0f}/s;"
                f" CPU us/ev svc {cpu / events * 1e6:.1f} + pg {pg / events * 1e6:.1f};"
                f" inline completed {stats.succeeded:,}, recorded {stats.recorded:,}"
            )
            with psycopg.connect(url) as conn:
                row = conn.execute(
                    "SELECT (SELECT count(*) FROM onceflow.workflows WHERE status = 'SUCCESS'),"
                    " (SELECT count(*) FROM onceflow.steps),"
                    f" (SELECT count(*) FROM {workload.DEFAULT_TABLE})"
                ).fetchone()
                print(f"check: SUCCESS workflows, steps, effects = {row}")
        finally:
            app.engine.shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.inline_micro", description=__doc__.splitlines()[0]
    )
    p.add_argument("-n", "--records", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=250, help="records per poll batch")
    p.add_argument("--profile", help="write a cProfile of the measured part here")
    p.add_argument(
        "--locale",
        help="the run database's default collation instead of the cluster's"
        ' ("en_US.UTF-8"; ICU: "icu:en-US")',
    )
    args = p.parse_args(argv)
    run(args.records, args.batch, args.profile, args.locale)
    return 0


if __name__ == "__main__":
    sys.exit(main())
