"""The README's example of the test kit: prove exactly-once on your own handlers.

This is the orders example app tested the way a user tests theirs: the real
consumer service as a subprocess, SIGKILLed mid-stream and restarted, then an
independent check, against Kafka and the Postgres tables only, that every
record ran exactly once and every order was paid once.
"""

import uuid

import psycopg

from consumers.testing import (
    ConsumerService,
    Effects,
    ExactlyOnceCheck,
    create_topic,
    kafka_bootstrap,
    postgres_url,
    produce,
)
from examples.orders.produce import sample_records


def fresh_database(server_url: str) -> str:
    name = f"kit_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return psycopg.conninfo.make_conninfo(server_url, dbname=name)


def test_orders_are_paid_exactly_once_through_a_crash() -> None:
    bootstrap = kafka_bootstrap()  # ONCEFLOW_TEST_KAFKA, else Docker, else a native broker
    database = fresh_database(postgres_url())  # likewise ONCEFLOW_TEST_DATABASE_URL
    topic, group = f"orders-{uuid.uuid4().hex[:8]}", "billing"
    create_topic(bootstrap, topic, partitions=3)

    service = ConsumerService(
        "examples.orders.app:app",
        env={
            "ONCEFLOW_DATABASE_URL": database,
            "ONCEFLOW_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "ORDERS_TOPIC": topic,
            "ORDERS_GROUP": group,
            "ONCEFLOW_LEASE": "3",
            "ONCEFLOW_HEARTBEAT": "0.5",
        },
    )
    records = list(sample_records(600, run_id=topic))
    invalid = sum(1 for _, _, valid in records if not valid)
    try:
        service.start()
        produce(bootstrap, topic, [(key, value) for key, value, _ in records[:300]])
        service.wait_for_output("assigned", timeout=60)
        service.kill()  # SIGKILL, mid-stream
        service.start()
        produce(bootstrap, topic, [(key, value) for key, value, _ in records[300:]])

        check = ExactlyOnceCheck(
            database,
            bootstrap,
            topic=topic,
            group=group,
            expected=len(records),
            effects=Effects("public.payments", key_column="customer_id", order_column="id"),
        )
        report = check.wait_until_complete(timeout=180, services=[service])
        # Malformed orders are parked in ERROR, never dropped: allow exactly those.
        assert len(report.not_success) == invalid
        assert set(report.not_success.values()) == {"ERROR"}
        check.assert_exactly_once(allow_errors=report.not_success)
    finally:
        service.close()
