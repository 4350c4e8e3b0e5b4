"""The test services themselves: real Postgres and Kafka that answer and survive restarts.

Crash tests (DESIGN.md §8) restart Postgres and the broker under running consumers,
so the restart tests use the native services, the ones this kit can restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic  # confluent-kafka 2.16 does not re-export it for mypy

from consumers.testing._services import NativeKafka, NativePostgres


def test_postgres_answers_and_may_create_databases(postgres_server_url: str) -> None:
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        row = conn.execute(
            "select rolsuper or rolcreatedb from pg_roles where rolname = current_user"
        ).fetchone()
        assert row == (True,)


def test_native_postgres_survives_restart() -> None:
    server = NativePostgres()
    server.start()
    started_at = "select pg_postmaster_start_time()"
    with psycopg.connect(server.url, autocommit=True) as before:
        first_start = before.execute(started_at).fetchone()
        server.restart()
        # The old session died with the server: the restart was real, not a no-op.
        with pytest.raises(psycopg.OperationalError):
            before.execute("select 1")
    assert server.is_running()
    with psycopg.connect(server.url, autocommit=True) as after:
        assert after.execute("select 1").fetchone() == (1,)
        assert after.execute(started_at).fetchone() != first_start


def test_kafka_round_trip(
    kafka_bootstrap: str,
    kafka_topic_factory: Callable[..., str],
    unique_name: Callable[[str], str],
) -> None:
    topic = kafka_topic_factory()
    sent = [f"record-{i}".encode() for i in range(10)]
    _produce(kafka_bootstrap, topic, sent)
    assert _consume(kafka_bootstrap, topic, unique_name("group"), len(sent)) == sent


def test_native_kafka_survives_restart(unique_name: Callable[[str], str]) -> None:
    broker = NativeKafka()
    broker.start()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    topic = unique_name("topic")
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(
        timeout=60
    )
    try:
        before = [f"before-{i}".encode() for i in range(10)]
        _produce(broker.bootstrap, topic, before)
        old_pid = broker.pid
        broker.restart()
        assert broker.is_running()
        assert broker.pid != old_pid
        after = [f"after-{i}".encode() for i in range(10)]
        _produce(broker.bootstrap, topic, after)
        # A fresh group reads both halves: the data survived the restart.
        assert _consume(broker.bootstrap, topic, unique_name("group"), 20) == before + after
    finally:
        admin.delete_topics([topic])[topic].result(timeout=60)


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            errors.append(err)

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for value in values:
        producer.produce(topic, value=value, on_delivery=on_delivery)
    assert producer.flush(30) == 0, "records still in flight after 30s"
    assert errors == []


def _consume(bootstrap: str, topic: str, group: str, count: int) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    received: list[bytes] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        while len(received) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            value = msg.value()
            assert isinstance(value, bytes)
            received.append(value)
    finally:
        consumer.close()
    return received
