"""The chaos run's producer replaces a stalled librdkafka producer without
losing, doubling or reordering a record (bench/chaos_feeder.py).

A real stall is rare (about one broker restart in twenty); this test makes
the same state on purpose: records queued while the broker is down, then the
producer declared stalled as the broker comes back. The topic must then hold
every record exactly once, in order per key.

It stops the shared native test broker for a few seconds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from bench.chaos_config import ChaosConfig
from bench.chaos_faults import native_services
from bench.chaos_feeder import Feeder
from consumers.testing import watermarks

BEFORE, DURING, KEYS = 600, 400, 40


def read_all(bootstrap: str, topic: str) -> list[dict[str, int]]:
    """Every record of `topic`, each partition in offset order."""
    ends = {p: high for p, (_, high) in watermarks(bootstrap, topic).items()}
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-reader"})
    consumer.assign([TopicPartition(topic, p, 0) for p in ends])
    records: list[dict[str, int]] = []
    try:
        while len(records) < sum(ends.values()):
            msg = consumer.poll(30.0)
            assert msg is not None, f"read {len(records)} of {sum(ends.values())} records"
            if msg.error() is None:
                records.append(json.loads(msg.value() or b"{}"))
    finally:
        consumer.close()
    return records


def test_a_stalled_producer_is_replaced_and_every_record_lands_once_in_order(
    postgres_server_url: str,
    kafka_bootstrap: str,
    kafka_topic_factory: Callable[..., str],
    tmp_path: Path,
) -> None:
    _, broker = native_services(postgres_server_url, kafka_bootstrap)
    topic = kafka_topic_factory(6)
    feeder = Feeder(kafka_bootstrap, topic, ChaosConfig(), 1, tmp_path / "producer.log")
    seqs = [0] * KEYS

    def send(i: int) -> None:
        key = f"k{i % KEYS}"
        value = {"id": i, "key": key, "seq": seqs[i % KEYS]}
        assert feeder._produce(key.encode(), json.dumps(value).encode())
        seqs[i % KEYS] += 1
        feeder.sent += 1

    for i in range(BEFORE):
        send(i)
    assert feeder._producer.flush(60) == 0 and feeder.acked == BEFORE
    broker.stop()
    try:
        for i in range(BEFORE, BEFORE + DURING):
            send(i)
        feeder._producer.poll(1.0)
    finally:
        broker.start()
    feeder._last_ack = 0.0  # as if nothing had been acknowledged for ages
    feeder._replace_if_stalled()
    assert len(feeder.replacements) == 1, feeder.errors
    assert feeder._producer.flush(120) == 0
    assert feeder.acked == BEFORE + DURING and not feeder.errors

    records = read_all(kafka_bootstrap, topic)
    ids = [r["id"] for r in records]
    assert sorted(ids) == list(range(BEFORE + DURING)), "a record was lost or doubled"
    last: dict[str, int] = {}
    for r in records:  # per partition in offset order, so per key too
        assert r["seq"] == last.get(r["key"], -1) + 1, f"key {r['key']} out of order"
        last[r["key"]] = r["seq"]
