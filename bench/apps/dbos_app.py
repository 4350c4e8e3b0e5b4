"""The same workload on DBOS Transact's Kafka consumer, for comparison.

    OFBENCH_TOPIC=... OFBENCH_GROUP=... OFBENCH_DATABASE_URL=... \
    OFBENCH_KAFKA=HOST:PORT python -m bench.apps.dbos_app

Run by `bench.throughput` only when `dbos` is installed (the benchmark never
installs it). Written against DBOS Transact 3.x (`@DBOS.kafka_consumer`,
`@DBOS.workflow`, `@DBOS.step`). DBOS 3 removed the application database and
`@DBOS.transaction`: the effect is written by a step on a connection pool of
our own, which is how DBOS 3 applications write their own tables (a step is
at-least-once: a re-run would insert the row again, and the benchmark's check
would count it as a duplicate).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

# mypy: disable-error-code="import-not-found,untyped-decorator,unused-ignore"
from dbos import DBOS, DBOSConfig, KafkaMessage
from psycopg_pool import ConnectionPool

from bench import workload
from bench.workload import BenchRecord

TOPIC = os.environ[workload.ENV_TOPIC]
GROUP = os.environ[workload.ENV_GROUP]
URL = os.environ["OFBENCH_DATABASE_URL"]
KAFKA = os.environ["OFBENCH_KAFKA"]

config: DBOSConfig = {
    "name": "onceflow-bench",
    "system_database_url": URL,
}
DBOS(config=config)
_pool = ConnectionPool(URL, min_size=1, max_size=8, kwargs={"autocommit": True}, open=False)

_INSERT = (
    "INSERT INTO bench_effects (event_id, part, off, produced_ms, score)"
    " VALUES (%(event_id)s, %(part)s, %(off)s, %(produced_ms)s, %(score)s)"
)


@DBOS.step()
def a(value: bytes) -> int:
    return workload.step_a(BenchRecord.model_validate_json(value))


@DBOS.step()
def b(value: int) -> int:
    return workload.step_b(value)


@DBOS.step()
def record_effect(row: dict[str, Any]) -> None:
    with _pool.connection() as conn:
        conn.execute(_INSERT, row)


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
    _pool.open()
    DBOS.launch()
    stop.wait()
    DBOS.destroy()
    _pool.close()


if __name__ == "__main__":
    main()
