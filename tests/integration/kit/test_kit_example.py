"""The README's example of the test kit: prove exactly-once on your own handlers.

This is the orders example app tested the way a user tests theirs: the real
consumer service as a subprocess, SIGKILLed mid-stream and restarted, then an
independent check, against Kafka and the Postgres tables only, that every
record ran exactly once and every order was paid once. The `onceflow_*`
fixtures come from the pytest plugin installed with Onceflow
(consumers/testing/plugin.py).
"""

from consumers.testing import Effects, ExactlyOnceCheck, produce
from examples.orders.produce import sample_records


def test_orders_are_paid_exactly_once_through_a_crash(
    onceflow_kafka, onceflow_database, onceflow_topic, onceflow_service
):
    topic, group = onceflow_topic(partitions=3), "billing"
    service = onceflow_service(
        "examples.orders.app:app",
        database=onceflow_database,
        env={"ORDERS_TOPIC": topic, "ORDERS_GROUP": group, "ONCEFLOW_LEASE": "3"},
    )
    records = list(sample_records(600, run_id=topic))
    invalid = sum(1 for _, _, valid in records if not valid)

    service.start()
    produce(onceflow_kafka, topic, [(key, value) for key, value, _ in records[:300]])
    service.wait_for_output("assigned", timeout=60)
    service.kill()  # SIGKILL, mid-stream
    service.start()
    produce(onceflow_kafka, topic, [(key, value) for key, value, _ in records[300:]])

    check = ExactlyOnceCheck(
        onceflow_database,
        onceflow_kafka,
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
