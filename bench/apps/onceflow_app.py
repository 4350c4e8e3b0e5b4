"""The benchmark's Onceflow service: two plain steps and one transaction step.

    OFBENCH_TOPIC=... OFBENCH_GROUP=... ONCEFLOW_DATABASE_URL=... \
    ONCEFLOW_KAFKA_BOOTSTRAP_SERVERS=... \
    python -m consumers.cli run bench.apps.onceflow_app:app

Topic, group and effects table come from OFBENCH_TOPIC, OFBENCH_GROUP and
OFBENCH_TABLE; the engine's own settings from ONCEFLOW_* as usual
(ONCEFLOW_WORKERS, ONCEFLOW_WRITERS, ...). For experiments, OFBENCH_ORDERING,
OFBENCH_MAX_IN_FLIGHT, OFBENCH_BATCH_SIZE and OFBENCH_CONSUMER_CONFIG override the subscription's
defaults; the benchmark leaves them unset, so it measures what a user gets.
"""

from __future__ import annotations

import json
import os
from typing import Any, cast

import psycopg

from bench import workload
from bench.workload import BenchRecord
from consumers import Event, KafkaApp, Ordering
from engine import Engine

TOPIC = os.environ.get(workload.ENV_TOPIC, "onceflow-bench")
GROUP = os.environ.get(workload.ENV_GROUP, "onceflow-bench")
TABLE = os.environ.get(workload.ENV_TABLE, workload.DEFAULT_TABLE)
_INSERT = workload.insert_effect(TABLE)

_tuning: dict[str, Any] = {}
if ordering := os.environ.get("OFBENCH_ORDERING"):
    _tuning["ordering"] = cast(Ordering, ordering)
if execution := os.environ.get("OFBENCH_EXECUTION"):
    _tuning["execution"] = execution
if max_in_flight := os.environ.get("OFBENCH_MAX_IN_FLIGHT"):
    _tuning["max_in_flight"] = int(max_in_flight)
if consumer_config := os.environ.get("OFBENCH_CONSUMER_CONFIG"):
    _tuning["consumer_config"] = json.loads(consumer_config)  # librdkafka settings, JSON
_app_tuning: dict[str, Any] = {}
if batch_size := os.environ.get("OFBENCH_BATCH_SIZE"):
    _app_tuning["batch_size"] = int(batch_size)

eng = Engine()  # ONCEFLOW_DATABASE_URL
app = KafkaApp(eng, **_app_tuning)  # ONCEFLOW_KAFKA_BOOTSTRAP_SERVERS


@eng.step()
def a(record: BenchRecord) -> int:
    return workload.step_a(record)


@eng.step()
def b(value: int) -> int:
    return workload.step_b(value)


@eng.transaction()
def record_effect(
    conn: psycopg.Connection[Any],
    event_id: int,
    partition: int,
    offset: int,
    produced_ms: int | None,
    score: int,
) -> None:
    conn.execute(_INSERT, (event_id, partition, offset, produced_ms, score))


@app.subscribe(TOPIC, group=GROUP, model=BenchRecord, **_tuning)
def handle(event: Event[BenchRecord]) -> None:
    produced_ms = None if event.timestamp is None else round(event.timestamp.timestamp() * 1000)
    score = b(a(event.value))
    record_effect(event.value.id, event.partition, event.offset, produced_ms, score)
