"""Fixtures shared by the whole suite.

Services are resolved lazily: only a test that requests ``postgres_server_url`` or
``kafka_bootstrap`` (directly or through another fixture) makes the session find or
start them, so ``tests/unit`` never touches the network. A missing service fails the
run with instructions; it is never a skip (DESIGN.md §8).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic  # confluent-kafka 2.16 does not re-export it for mypy

from consumers.testing import _services

UniqueName = Callable[[str], str]
TopicFactory = Callable[..., str]


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """URL of a Postgres server whose role may CREATE DATABASE."""
    try:
        return _services.postgres_url()
    except _services.ServiceUnavailable as exc:
        message = str(exc)  # failed outside the except block: no chained traceback
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Bootstrap address of a Kafka broker that does not auto-create topics."""
    try:
        return _services.kafka_bootstrap()
    except _services.ServiceUnavailable as exc:
        message = str(exc)  # failed outside the except block: no chained traceback
    pytest.fail(message, pytrace=False)


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> UniqueName:
    """Return ``make(prefix)``: a fresh name, valid as a Kafka topic, group or database.

    Lowercase ``[a-z0-9_]`` within Postgres' 63-byte identifier limit, carrying the
    test's name so leftovers on a shared broker or server can be traced to a test.
    """
    slug = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")

    def make(prefix: str = "t") -> str:
        suffix = uuid.uuid4().hex[:10]
        room = 63 - len(prefix) - len(suffix) - 2
        return f"{prefix}_{slug[: max(room, 0)]}_{suffix}"

    return make


@pytest.fixture
def kafka_topic_factory(kafka_bootstrap: str, unique_name: UniqueName) -> Iterator[TopicFactory]:
    """Return ``create(partitions=1, *, prefix="topic") -> name``; topics die at teardown."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    created: list[str] = []

    def create(partitions: int = 1, *, prefix: str = "topic") -> str:
        name = unique_name(prefix)
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1)],
            operation_timeout=30,
            request_timeout=30,
        )
        futures[name].result(timeout=60)
        created.append(name)
        _wait_for_leaders(admin, name, partitions)
        return name

    yield create
    if created:
        for name, future in admin.delete_topics(created, operation_timeout=30).items():
            try:
                future.result(timeout=60)
            except KafkaException as exc:  # a test may have deleted its topic itself
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise AssertionError(f"could not delete topic {name}: {exc}") from exc


def _wait_for_leaders(admin: AdminClient, topic: str, partitions: int) -> None:
    # create_topics returns once the controller accepted the topic; a producer that
    # starts before every partition has a leader would see transient errors.
    deadline = time.monotonic() + 30
    while True:
        found = admin.list_topics(topic=topic, timeout=10).topics.get(topic)
        if (
            found is not None
            and found.error is None
            and len(found.partitions) == partitions
            and all(p.leader >= 0 for p in found.partitions.values())
        ):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"topic {topic} has no leader for every partition after 30s")
        time.sleep(0.1)
