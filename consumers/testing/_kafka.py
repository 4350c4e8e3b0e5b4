"""The Kafka side of the test kit: topics, records and a group's offsets.

`create_topic`, `produce`, `watermarks`, `committed_offsets`, `rewind_group`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic  # not re-exported for mypy by confluent-kafka 2.16

KeyValue = tuple[bytes | str | None, bytes | str | None]


def create_topic(bootstrap: str, topic: str, *, partitions: int = 1, timeout: float = 30.0) -> None:
    """Create `topic` and wait until every partition has a leader."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = NewTopic(topic, num_partitions=partitions, replication_factor=1)
    admin.create_topics([new], operation_timeout=timeout)[topic].result(timeout)
    deadline = time.monotonic() + timeout
    while True:
        found = admin.list_topics(topic=topic, timeout=timeout).topics.get(topic)
        leaders = (
            [] if found is None or found.error else [p.leader for p in found.partitions.values()]
        )
        if len(leaders) == partitions and min(leaders) >= 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {topic} has no leader for every partition in {timeout}s")
        time.sleep(0.1)


def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[KeyValue],
    *,
    partition: int | None = None,
    config: Mapping[str, Any] | None = None,
    timeout: float = 60.0,
) -> int:
    """Produce (key, value) records in order; return their number once all are
    acknowledged. Batches generously: 100,000 small records take seconds.

    Raises:
        KafkaException: a record was not delivered.
    """
    conf = {
        "bootstrap.servers": bootstrap,
        "linger.ms": 20,
        "batch.num.messages": 10000,
        "compression.type": "lz4",
        "enable.idempotence": True,  # a retried send is neither doubled nor reordered
        **(config or {}),
    }
    producer = Producer(conf)
    errors: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            errors.append(err)

    count = 0
    target = -1 if partition is None else partition  # -1: the partitioner picks
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key, target, on_delivery=delivered)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.05)
        count += 1
    if left := producer.flush(timeout):
        raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, f"{left} records not delivered"))
    if errors:
        raise KafkaException(errors[0])
    return count


def _with_consumer(bootstrap: str, group: str | None, topic: str) -> tuple[Consumer, list[int]]:
    found = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic=topic, timeout=10)
    meta = found.topics.get(topic)
    if meta is None or meta.error is not None:
        raise KafkaException(meta.error if meta else KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))
    group = group or f"onceflow-kit-{uuid.uuid4().hex}"
    conf = {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    return Consumer(conf), sorted(meta.partitions)


def watermarks(bootstrap: str, topic: str) -> dict[int, tuple[int, int]]:
    """(low, high) offsets of each partition: it holds the records low..high-1."""
    consumer, partitions = _with_consumer(bootstrap, None, topic)
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            for p in partitions
        }
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    """The group's committed offset of each partition (None: nothing committed)."""
    consumer, partitions = _with_consumer(bootstrap, group, topic)
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return {tp.partition: tp.offset if tp.offset >= 0 else None for tp in found}
    finally:
        consumer.close()


def rewind_group(bootstrap: str, group: str, topic: str, offset: int = 0) -> None:
    """Commit `offset` for every partition of `topic` under `group`, as an
    operator resetting offsets would. The group must have no live member."""
    consumer, partitions = _with_consumer(bootstrap, group, topic)
    try:
        offsets = [TopicPartition(topic, p, offset) for p in partitions]
        consumer.commit(offsets=offsets, asynchronous=False)
    finally:
        consumer.close()
