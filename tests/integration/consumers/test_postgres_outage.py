"""Postgres unavailable for a while (DESIGN.md §7): ingestion retries, no offset is
committed past what Postgres holds, and once it is back nothing is lost or doubled.

This test stops the shared native test server for a few seconds (and starts it
again whatever happens): other test sessions on that server see the outage too.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from apps.flow import orders
from consumer_support import succeeded, wait_until

from consumers.testing import (
    ConsumerService,
    ExactlyOnceCheck,
    committed_offsets,
    produce,
    watermarks,
)
from consumers.testing._services import NativePostgres

BEFORE, DURING = 300, 200
OUTAGE = 6.0  # seconds Postgres stays down once the service noticed


def consumed(service: ConsumerService) -> int:
    """The latest `consumed` count the service's progress lines show."""
    counts = re.findall(r"'consumed': (\d+)", service.output())
    return int(counts[-1]) if counts else 0


def test_postgres_outage_loses_nothing_and_commits_nothing_early(
    kafka_bootstrap: str,
    effects_url: str,
    native_postgres: NativePostgres,
    topic_group: Callable[..., tuple[str, str]],
    make_service: Callable[..., ConsumerService],
    make_check: Callable[..., ExactlyOnceCheck],
) -> None:
    topic, group = topic_group(partitions=2)
    produce(kafka_bootstrap, topic, orders(BEFORE))
    service = make_service(topic, group, FLOW_STEP_DELAY="0.02", FLOW_MAX_IN_FLIGHT="8")
    service.start()
    # Stop Postgres with workflows running: their checkpoints must wait for it.
    wait_until(lambda: succeeded(effects_url) >= 50, timeout=60, what="the first completions")
    recorded = {p: high for p, (_, high) in watermarks(kafka_bootstrap, topic).items()}
    native_postgres.stop()
    try:
        produce(kafka_bootstrap, topic, orders(DURING, start=BEFORE))
        # The service polled new records and waits to record them (it logs
        # "cannot record ..., retrying" whenever its pool gives up on a connection).
        wait_until(lambda: consumed(service) > BEFORE, timeout=30, what="new records polled")
        deadline = time.monotonic() + OUTAGE
        while time.monotonic() < deadline:
            assert service.is_alive(), service.tail()
            # The server is shared: a test session elsewhere may start it again.
            assert not native_postgres.is_running(), "Postgres was started by someone else"
            committed = committed_offsets(kafka_bootstrap, group, topic)
            early = {p: c for p, c in committed.items() if c is not None and c > recorded[p]}
            assert not early, f"offsets {early} committed while Postgres was down ({recorded})"
            time.sleep(0.5)
    finally:
        native_postgres.start()

    check = make_check(topic, group, expected=BEFORE + DURING)
    check.wait_until_complete(timeout=120, services=[service])
    assert check.assert_exactly_once().statuses == {"SUCCESS": BEFORE + DURING}
    # Committing resumes once the records are durable.
    ends = {p: high for p, (_, high) in watermarks(kafka_bootstrap, topic).items()}
    wait_until(
        lambda: committed_offsets(kafka_bootstrap, group, topic) == ends,
        timeout=30,
        pause=0.5,
        what=f"committed offsets {ends}",
    )
    assert service.stop() == 0, service.tail()


def test_a_service_started_while_postgres_is_down_waits_for_it(
    kafka_bootstrap: str,
    effects_url: str,
    native_postgres: NativePostgres,
    topic_group: Callable[..., tuple[str, str]],
    make_service: Callable[..., ConsumerService],
    make_check: Callable[..., ExactlyOnceCheck],
) -> None:
    topic, group = topic_group(partitions=2)
    produce(kafka_bootstrap, topic, orders(BEFORE))
    service = make_service(topic, group)
    native_postgres.stop()
    try:
        service.start()
        wait_until(
            lambda: "launching the engine failed, retrying" in service.output(),
            timeout=30,
            what="the service to report that it waits for Postgres",
        )
        assert service.is_alive(), service.tail()
    finally:
        native_postgres.start()
    check = make_check(topic, group, expected=BEFORE)
    check.wait_until_complete(timeout=120, services=[service])
    assert check.assert_exactly_once().statuses == {"SUCCESS": BEFORE}
    assert service.stop() == 0, service.tail()
