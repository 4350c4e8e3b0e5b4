"""Two groups on one topic: each processes every record once, independently."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
from apps.flow import orders, subscribe_flow
from consumer_support import wait_complete

from consumers import KafkaApp
from consumers.testing import ExactlyOnceCheck, produce

RECORDS = 150


def test_each_group_runs_every_record_once(
    kafka_bootstrap: str,
    effects_url: str,
    topic_group: Callable[..., tuple[str, str]],
    unique_name: Callable[[str], str],
    make_app: Callable[..., KafkaApp],
    make_check: Callable[..., ExactlyOnceCheck],
) -> None:
    topic, group_a = topic_group(partitions=2)
    group_b = unique_name("group")
    produce(kafka_bootstrap, topic, orders(RECORDS))
    app = make_app()
    subscribe_flow(app, topic=topic, group=group_a)
    subscribe_flow(app, topic=topic, group=group_b)
    app.start()
    for group in (group_a, group_b):
        check = make_check(topic, group, expected=RECORDS)
        wait_complete(check, app, timeout=60)
        assert check.assert_exactly_once().statuses == {"SUCCESS": RECORDS}
    with psycopg.connect(effects_url) as conn:
        per_group: dict[str, int] = dict(
            conn.execute(
                'SELECT grp, count(DISTINCT (partition, "offset")) FROM public.effects GROUP BY grp'
            )
        )
    assert per_group == {group_a: RECORDS, group_b: RECORDS}
