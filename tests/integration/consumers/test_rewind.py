"""Rewinding a group's offsets replays the records, not the work (DESIGN.md §1.2)."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
from apps.flow import orders, subscribe_flow
from consumer_support import wait_complete, wait_until

from consumers import KafkaApp
from consumers.testing import (
    ExactlyOnceCheck,
    committed_offsets,
    produce,
    rewind_group,
    watermarks,
)

RECORDS = 200


def table_state(database_url: str) -> tuple[int, int, int, object]:
    """(workflows, steps, effects, latest workflow update): what a replay must not change."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM onceflow.workflows),"
            " (SELECT count(*) FROM onceflow.steps),"
            " (SELECT count(*) FROM public.effects),"
            " (SELECT max(updated_at) FROM onceflow.workflows)"
        ).fetchone()
    assert row is not None
    return row[0], row[1], row[2], row[3]


def test_rewound_offsets_create_no_workflow_and_repeat_no_effect(
    kafka_bootstrap: str,
    effects_url: str,
    topic_group: Callable[..., tuple[str, str]],
    make_app: Callable[..., KafkaApp],
    make_check: Callable[..., ExactlyOnceCheck],
) -> None:
    topic, group = topic_group(partitions=2)
    produce(kafka_bootstrap, topic, orders(RECORDS))
    first = make_app()
    subscribe_flow(first, topic=topic, group=group)
    first.start()
    check = make_check(topic, group, expected=RECORDS)
    wait_complete(check, first, timeout=60)
    first.stop()  # commits the stored offsets on the way out
    ends = {p: high for p, (_, high) in watermarks(kafka_bootstrap, topic).items()}
    assert committed_offsets(kafka_bootstrap, group, topic) == ends
    before = table_state(effects_url)
    assert (before[0], before[2]) == (RECORDS, RECORDS)  # workflows, effects

    rewind_group(kafka_bootstrap, group, topic, 0)
    assert committed_offsets(kafka_bootstrap, group, topic) == dict.fromkeys(ends, 0)

    second = make_app()
    subscribe_flow(second, topic=topic, group=group)
    second.start()
    # Every record is consumed again and found already done...
    wait_until(
        lambda: second.stats().get("duplicates") == RECORDS,
        timeout=60,
        what=f"{RECORDS} redelivered records (stats: {second.stats()})",
    )
    second.stop()
    stats = second.stats()
    assert (stats["consumed"], stats["recorded"], stats["succeeded"]) == (RECORDS, 0, 0)
    # ...while Kafka moved on again, and nothing changed in Postgres.
    assert committed_offsets(kafka_bootstrap, group, topic) == ends
    assert table_state(effects_url) == before
    check.assert_exactly_once()
