"""Rebalance (DESIGN.md §5, §6): two services in one group while records flow; one
stops gracefully and comes back, the other is SIGKILLed and comes back. Every
record still runs once, and each key's effects stay in order across hand-overs."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from consumer_support import Feeder, succeeded, wait_until

from consumers.testing import ConsumerService, ExactlyOnceCheck


@pytest.mark.slow
def test_services_come_and_go_and_every_record_runs_once_in_key_order(
    kafka_bootstrap: str,
    effects_url: str,
    topic_group: Callable[..., tuple[str, str]],
    make_service: Callable[..., ConsumerService],
    make_check: Callable[..., ExactlyOnceCheck],
) -> None:
    topic, group = topic_group(partitions=4)
    settings = {"FLOW_STEP_DELAY": "0.03", "FLOW_MAX_IN_FLIGHT": "16"}
    a = make_service(topic, group, **settings)
    b = make_service(topic, group, **settings)
    feeder = Feeder(kafka_bootstrap, topic)

    def progress(more: int, *running: ConsumerService) -> None:
        target = succeeded(effects_url) + more

        def done() -> bool:
            for service in running:
                assert service.is_alive(), f"{service} died\n{service.tail()}"
            return succeeded(effects_url) >= target

        wait_until(done, timeout=60, pause=0.2, what=f"{target} completions")

    try:
        a.start()
        b.start()
        a.wait_for_output("assigned topic_")
        b.wait_for_output("assigned topic_")
        feeder.start()
        progress(300, a, b)

        assert a.stop() == 0, a.tail()  # graceful: hands its partitions over
        progress(300, b)
        a.start()
        a.wait_for_output("assigned topic_")
        progress(300, a, b)

        assert b.kill() < 0  # a crash: its partitions and work are taken over
        progress(300, a)
        b.start()
        b.wait_for_output("assigned topic_")
        progress(200, a, b)
    finally:
        sent = feeder.stop()

    check = make_check(topic, group, expected=sent)
    check.wait_until_complete(timeout=90, services=[a, b])
    report = check.assert_exactly_once()
    assert report.statuses == {"SUCCESS": sent}
    with psycopg.connect(effects_url) as conn:
        executors = conn.execute("SELECT count(DISTINCT executor) FROM public.effects").fetchone()
    assert executors is not None and executors[0] >= 3, "the work did not move between services"
