"""Kafka unavailable for a while (DESIGN.md §7): workflows already recorded keep
running, the consumer keeps retrying, and once the broker is back the records
produced since run; nothing is lost or doubled.

This test stops the shared native test broker for a few seconds (and starts it
again whatever happens): other test sessions on that broker see the outage too.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from apps.flow import orders
from consumer_support import succeeded, wait_until

from consumers.testing import ConsumerService, ExactlyOnceCheck, produce
from consumers.testing._services import NativeKafka

BEFORE, AFTER = 800, 100  # BEFORE takes ~20 s: work is left when the broker goes
SESSION_TIMEOUT = 6.0  # the services' session.timeout.ms (apps/service.py)


def test_broker_outage_loses_nothing_and_recorded_work_goes_on(
    kafka_bootstrap: str,
    effects_url: str,
    native_kafka: NativeKafka,
    topic_group: Callable[..., tuple[str, str]],
    make_service: Callable[..., ConsumerService],
    make_check: Callable[..., ExactlyOnceCheck],
) -> None:
    topic, group = topic_group(partitions=2)
    produce(kafka_bootstrap, topic, orders(BEFORE))
    service = make_service(topic, group, FLOW_STEP_DELAY="0.1", FLOW_MAX_IN_FLIGHT="4")
    service.start()
    wait_until(lambda: succeeded(effects_url) >= 30, timeout=60, what="the first completions")
    native_kafka.stop()
    try:
        # Recorded workflows need no broker: they keep completing, also once the
        # consumer's group session has timed out.
        time.sleep(SESSION_TIMEOUT + 2)
        during = succeeded(effects_url)
        assert during < BEFORE, "no work was left to do during the outage"
        wait_until(
            lambda: succeeded(effects_url) >= during + 20,
            timeout=10,
            what=f"completions past {during} with the broker down {SESSION_TIMEOUT + 2}s",
        )
        assert service.is_alive(), service.tail()
    finally:
        native_kafka.start()
    produce(kafka_bootstrap, topic, orders(AFTER, start=BEFORE))
    check = make_check(topic, group, expected=BEFORE + AFTER)
    check.wait_until_complete(timeout=120, services=[service])
    assert check.assert_exactly_once().statuses == {"SUCCESS": BEFORE + AFTER}
    assert service.stop() == 0, service.tail()
