"""A service frozen (SIGSTOP) long enough to lose its partitions and its lease is
a zombie when it wakes: its runs are fenced (DESIGN.md §1.6), and every record
still has its effect exactly once, in per-key order."""

from __future__ import annotations

import time
from collections.abc import Callable

from apps.flow import orders
from consumer_support import LEASE, succeeded, wait_until

from consumers.testing import ConsumerService, ExactlyOnceCheck, produce

RECORDS = 400
FROZEN = 6.0 + LEASE + 2.0  # past Kafka's session timeout and the engine's lease


def test_a_frozen_service_is_fenced_when_it_wakes(
    kafka_bootstrap: str,
    effects_url: str,
    topic_group: Callable[..., tuple[str, str]],
    make_service: Callable[..., ConsumerService],
    make_check: Callable[..., ExactlyOnceCheck],
) -> None:
    topic, group = topic_group(partitions=2)
    produce(kafka_bootstrap, topic, orders(RECORDS, keys=16))
    settings = {"FLOW_STEP_DELAY": "0.1", "FLOW_MAX_IN_FLIGHT": "4"}
    a = make_service(topic, group, **settings)
    b = make_service(topic, group, **settings)
    a.start()
    b.start()
    a.wait_for_output("assigned topic_")
    b.wait_for_output("assigned topic_")
    wait_until(lambda: succeeded(effects_url) >= 40, timeout=60, what="the first completions")
    assert "assigned topic_" in a.output(), "A owns no partition: it would freeze holding nothing"

    a.pause()  # mid-step: its runs hold workflows that B will take over
    time.sleep(FROZEN)
    a.resume()

    check = make_check(topic, group, expected=RECORDS)
    check.wait_until_complete(timeout=120, services=[a, b])
    report = check.assert_exactly_once()
    assert report.statuses == {"SUCCESS": RECORDS}
    # The zombie's runs were refused their checkpoints, not allowed to finish.
    wait_until(
        lambda: "taken over by another executor" in a.output(),
        timeout=10,
        what=f"A's runs to be fenced\n{a.tail()}",
    )
    assert a.stop() == 0 and b.stop() == 0


def test_a_zombie_given_its_partitions_back_keeps_each_key_in_order(
    kafka_bootstrap: str,
    effects_url: str,
    topic_group: Callable[..., tuple[str, str]],
    make_service: Callable[..., ConsumerService],
    make_check: Callable[..., ExactlyOnceCheck],
) -> None:
    # A wakes holding lanes whose workflows B took over meanwhile; B then
    # leaves (handing them back) and A gets every partition again. Each of
    # A's fenced runs must keep its key's later records waiting until it is
    # really done, by whoever (the chaos run's 404 order violations).
    topic, group = topic_group(partitions=2)
    produce(kafka_bootstrap, topic, orders(RECORDS, keys=2))
    settings = {"FLOW_STEP_DELAY": "0.05", "FLOW_MAX_IN_FLIGHT": "8"}
    a = make_service(topic, group, **settings)
    b = make_service(topic, group, **settings)
    a.start()
    b.start()
    a.wait_for_output("assigned topic_")
    b.wait_for_output("assigned topic_")
    wait_until(lambda: succeeded(effects_url) >= 40, timeout=60, what="the first completions")

    a.pause()
    time.sleep(FROZEN)
    a.resume()
    wait_until(
        lambda: " lost " in a.output(), timeout=30, what=f"A to lose its partitions\n{a.tail()}"
    )
    assert b.stop() == 0, b.tail()  # hands its work back; A is given every partition

    check = make_check(topic, group, expected=RECORDS)
    check.wait_until_complete(timeout=120, services=[a])
    report = check.assert_exactly_once()
    assert report.statuses == {"SUCCESS": RECORDS}
    assert a.stop() == 0
