"""The baselines: a plain confluent-kafka consumer doing the benchmark's work.

    python -m bench.apps.plain --mode batched|per-event --database-url URL \
        --bootstrap HOST:PORT --topic T --group G --limits 0:5000,1:5000

At-least-once, no checkpoints: poll a batch, validate each record, run the
two compute functions, insert the effects, commit, and only then store the
offsets (committed by the client in the background). `batched` inserts a
poll's records in one statement and one commit; `per-event` runs one
autocommit INSERT per record. `floor` writes Onceflow's rows the cheapest way
(bench/apps/floor.py): exactly-once, no engine.

It consumes partition p up to offset limit_p (exclusive), prints one JSON
line (events, seconds from the first record consumed to the last effect
committed, CPU seconds, peak RSS), then waits for its stdin to close before
it disconnects, so that the caller can read Postgres' side of the run first.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from bench import workload
from bench.apps.floor import Floor, Raw, Row
from bench.workload import BenchRecord


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.apps.plain")
    parser.add_argument(
        "--mode", choices=("batched", "per-event", "floor", "floor-compact"), required=True
    )
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--table", default=workload.DEFAULT_TABLE)
    parser.add_argument("--limits", required=True, help="PARTITION:END_OFFSET,...")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--topic-id", default="", help="--mode floor: for the workflow IDs")
    args = parser.parse_args(argv)
    limits = {int(p): int(o) for p, o in (part.split(":") for part in args.limits.split(","))}
    consume(args, limits)
    return 0


def consume(args: argparse.Namespace, limits: dict[int, int]) -> None:
    conn = psycopg.connect(args.database_url, autocommit=True)
    insert_one, insert_many = (
        workload.insert_effect(args.table),
        workload.insert_effects(args.table),
    )
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "auto.offset.reset": "earliest",
            # At-least-once: offsets stored by hand after the Postgres commit.
            "enable.auto.offset.store": False,
            "enable.auto.commit": True,
        }
    )
    consumer.subscribe([args.topic])
    floor = None
    if args.mode.startswith("floor"):
        compact = args.mode == "floor-compact"
        floor = Floor(conn, args.group, args.topic, args.topic_id, compact=compact)
    left = {p for p, end in limits.items() if end > 0}
    events = 0
    first: float | None = None
    cpu_first = 0.0
    try:
        while left:
            batch = consumer.consume(args.batch_size, timeout=0.1)
            if first is None and batch:
                first, cpu_first = time.monotonic(), time.process_time()
            rows: list[Row] = []
            raw: list[Raw] = []
            first_steps: list[int] = []
            for msg in batch:
                if not _usable(msg):
                    continue
                partition, offset, value = msg.partition(), msg.offset(), msg.value()
                assert partition is not None and offset is not None and value is not None
                if partition not in left or offset >= limits[partition]:
                    continue
                record = BenchRecord.model_validate_json(value)
                ts_type, ts = msg.timestamp()
                a = workload.step_a(record)
                rows.append(
                    (record.id, partition, offset, ts if ts_type else None, workload.step_b(a))
                )
                if floor is not None:
                    raw.append((msg.key(), value))
                    first_steps.append(a)
            if not rows:
                continue
            if floor is not None:
                floor.write(rows, raw, first_steps)
                _store(consumer, args.topic, rows)
            elif args.mode == "batched":
                with conn.transaction():
                    conn.execute(insert_many, [list(column) for column in zip(*rows, strict=True)])
                _store(consumer, args.topic, rows)
            else:
                for row in rows:
                    conn.execute(insert_one, row)  # autocommit: one transaction per event
                    _store(consumer, args.topic, [row])
            events += len(rows)
            for _, partition, offset, _, _ in rows:
                if offset + 1 >= limits[partition] and partition in left:
                    left.discard(partition)
                    consumer.pause([TopicPartition(args.topic, partition)])
        end = time.monotonic()
        cpu = time.process_time() - cpu_first
        result: dict[str, Any] = {
            "events": events,
            "seconds": end - (first or end),
            "cpu_seconds": cpu,
            "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        }
        print(json.dumps(result), flush=True)
        sys.stdin.read()  # the caller closes it once it has read Postgres' figures
    finally:
        consumer.close()  # commits the stored offsets
        conn.close()


def _usable(msg: Message) -> bool:
    err = msg.error()
    if err is None:
        return True
    if err.code() == KafkaError._PARTITION_EOF:
        return False
    if err.fatal():
        raise KafkaException(err)
    return False


def _store(consumer: Consumer, topic: str, rows: list[Row]) -> None:
    """Offsets after the rows just committed: the next record of each partition."""
    top: dict[int, int] = {}
    for _, partition, offset, _, _ in rows:
        top[partition] = max(top.get(partition, -1), offset)
    consumer.store_offsets(offsets=[TopicPartition(topic, p, o + 1) for p, o in top.items()])


if __name__ == "__main__":
    sys.exit(main())
