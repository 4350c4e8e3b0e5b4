"""The same workload on DBOS Transact's Kafka consumer, for comparison.

    OFBENCH_TOPIC=... OFBENCH_GROUP=... OFBENCH_DATABASE_URL=... \
    OFBENCH_KAFKA=HOST:PORT python -m bench.apps.dbos_app

Run by `bench.throughput` only when `dbos` is installed (the benchmark never
installs it). Written against DBOS Transact 3.x's documented API
(`@DBOS.kafka_consumer`, `@DBOS.workflow`, `@DBOS.step`, `@DBOS.transaction`
with `DBOS.sql_session`); not exercised where dbos is absent.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

# mypy: disable-error-code="import-not-found,untyped-decorator,unused-ignore"
import sqlalchemy as sa  # a dependency of dbos
from dbos import DBOS, DBOSConfig, KafkaMessage

from bench import workload
from bench.workload import BenchRecord

TOPIC = os.environ[workload.ENV_TOPIC]
GROUP = os.environ[workload.ENV_GROUP]
URL = os.environ["OFBENCH_DATABASE_URL"]
KAFKA = os.environ["OFBENCH_KAFKA"]

config: DBOSConfig = {
    "name": "onceflow-bench",
    "system_database_url": URL,
    "application_database_url": URL,
}
DBOS(config=config)

_INSERT = sa.text(
    "INSERT INTO bench_effects (event_id, part, off, produced_ms, score)"
    " VALUES (:event_id, :part, :off, :produced_ms, :score)"
)


@DBOS.step()
def a(value: bytes) -> int:
    return workload.step_a(BenchRecord.model_validate_json(value))


@DBOS.step()
def b(value: int) -> int:
    return workload.step_b(value)


@DBOS.transaction()
def record_effect(row: dict[str, Any]) -> None:
    DBOS.sql_session.execute(_INSERT, row)


@DBOS.kafka_consumer(
    config={"bootstrap.servers": KAFKA, "group.id": GROUP, "auto.offset.reset": "earliest"},
    topics=[TOPIC],
)
@DBOS.workflow()
def handle(msg: KafkaMessage) -> None:
    assert msg.value is not None
    record = BenchRecord.model_validate_json(msg.value)
    ts = msg.timestamp
    produced_ms = ts[1] if isinstance(ts, tuple) else ts
    score = b(a(msg.value))
    record_effect(
        {
            "event_id": record.id,
            "part": msg.partition,
            "off": msg.offset,
            "produced_ms": produced_ms,
            "score": score,
        }
    )


def main() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    DBOS.launch()
    stop.wait()
    DBOS.destroy()


if __name__ == "__main__":
    main()
