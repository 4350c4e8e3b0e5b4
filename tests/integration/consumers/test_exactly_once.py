"""Every record runs exactly once: one workflow, SUCCESS once, its effect once."""

from __future__ import annotations

from collections.abc import Callable

from apps.flow import orders, subscribe_flow
from consumer_support import wait_complete, wait_until

from consumers import KafkaApp
from consumers.testing import ExactlyOnceCheck, produce


def test_every_record_runs_once(
    kafka_bootstrap: str,
    topic_group: Callable[..., tuple[str, str]],
    make_app: Callable[..., KafkaApp],
    make_check: Callable[..., ExactlyOnceCheck],
) -> None:
    topic, group = topic_group(partitions=2)
    produce(kafka_bootstrap, topic, orders(300, keys=10))
    app = make_app()
    subscribe_flow(app, topic=topic, group=group)
    app.start()
    check = make_check(topic, group, expected=300)
    wait_complete(check, app, timeout=60)
    report = check.assert_exactly_once()
    assert report.statuses == {"SUCCESS": 300}
    wait_until(lambda: app.stats()["succeeded"] == 300, timeout=10, what="the app's counters")
    stats = app.stats()
    assert stats["recorded"] == stats["consumed"] == 300
    assert stats["duplicates"] == 0
    assert stats["bad_records"] == 0
