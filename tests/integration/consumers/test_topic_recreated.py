"""A topic deleted and recreated under the same name (offsets start again at 0)
gets its records run, not swallowed as redeliveries of the old topic's
(DESIGN.md §9: the topic ID is part of the workflow ID)."""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
import pytest
from apps.flow import orders, subscribe_flow
from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient
from consumer_support import wait_until

from consumers import KafkaApp
from consumers.testing import create_topic, produce

FIRST, SECOND = 20, 15


def topic_id(bootstrap: str, topic: str) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.describe_topics(TopicCollection([topic]))
    return str(futures[topic].result(30).topic_id)


def recreate(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_topics([topic], operation_timeout=30)[topic].result(60)
    deadline = time.monotonic() + 60
    while True:  # deletion completes in the background
        try:
            create_topic(bootstrap, topic)
            return
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"{topic} was not deleted within 60s")
        time.sleep(0.2)


def effects_by_incarnation(database_url: str, topic: str) -> dict[str, int]:
    """SUCCESS workflows with their effect, per topic ID (the third field of the ID)."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT split_part(w.workflow_id, ':', 3), count(*) FROM onceflow.workflows w"
            " JOIN public.effects e ON e.workflow_id = w.workflow_id"
            " WHERE w.source_topic = %s AND w.status = 'SUCCESS' GROUP BY 1",
            (topic,),
        ).fetchall()
    return {str(tid): int(n) for tid, n in rows}


@pytest.mark.parametrize("while_running", [False, True], ids=["stopped", "running"])
def test_records_of_a_recreated_topic_run_under_new_ids(
    while_running: bool,
    kafka_bootstrap: str,
    effects_url: str,
    topic_group: Callable[..., tuple[str, str]],
    make_app: Callable[..., KafkaApp],
) -> None:
    topic, group = topic_group(partitions=1)
    # Metadata refreshed every second, so the consumer sees the topic come back soon.
    fast_metadata = {"topic.metadata.refresh.interval.ms": 1000}
    app = make_app()
    subscribe_flow(app, topic=topic, group=group, consumer_config=fast_metadata)
    old_id = topic_id(kafka_bootstrap, topic)
    produce(kafka_bootstrap, topic, orders(FIRST))
    app.start()
    wait_until(
        lambda: effects_by_incarnation(effects_url, topic) == {old_id: FIRST},
        timeout=60,
        what="the first incarnation's records",
    )
    if not while_running:
        app.stop()
    recreate(kafka_bootstrap, topic)
    new_id = topic_id(kafka_bootstrap, topic)
    assert new_id != old_id
    produce(kafka_bootstrap, topic, orders(SECOND, start=1000))
    if not while_running:
        app = make_app()
        subscribe_flow(app, topic=topic, group=group, consumer_config=fast_metadata)
        app.start()
    wait_until(
        lambda: effects_by_incarnation(effects_url, topic) == {old_id: FIRST, new_id: SECOND},
        timeout=30,
        what="the second incarnation's records",
    )
