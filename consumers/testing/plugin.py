"""pytest fixtures for testing your own Onceflow consumer services.

Installed with Onceflow as a pytest plugin (entry point ``pytest11``), so the
fixtures are there in any test session; every name starts with ``onceflow_``
and nothing runs unless a test asks for one:

- ``onceflow_kafka`` (session): a Kafka bootstrap address;
- ``onceflow_postgres`` (session): a Postgres server URL whose role may create
  databases;
- ``onceflow_database``: a fresh, empty database for this test (the service
  migrates it when it starts), dropped at teardown;
- ``onceflow_topic``: ``make(partitions=1) -> name``, fresh topics deleted at
  teardown;
- ``onceflow_service``: ``make(app, *, database, env=None, **kwargs) ->
  ConsumerService``, your ``KafkaApp`` (``"module:attribute"``) as a real
  process wired to ``onceflow_kafka`` and ``database`` (not started); still
  running at teardown, it is killed.

The services come from ``ONCEFLOW_TEST_DATABASE_URL`` / ``ONCEFLOW_TEST_KAFKA``,
else testcontainers, else native processes; if none can be had, the test fails
and says how to provide them (never a skip).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from psycopg import sql
from psycopg.conninfo import make_conninfo

from ._consumer_service import ConsumerService
from ._kafka import create_topic
from ._services import ServiceUnavailable, kafka_bootstrap, postgres_url

TopicFactory = Callable[..., str]
ServiceFactory = Callable[..., ConsumerService]


def _service_or_fail(find: Callable[[], str]) -> str:
    try:
        return find()
    except ServiceUnavailable as exc:
        message = str(exc)  # failed outside the except block: no chained traceback
    pytest.fail(message, pytrace=False)


def _unique(request: pytest.FixtureRequest, prefix: str) -> str:
    """A fresh name carrying the test's, valid for a database, topic or group."""
    slug = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")
    suffix = uuid.uuid4().hex[:10]
    room = 63 - len(prefix) - len(suffix) - 2
    return f"{prefix}_{slug[: max(room, 0)]}_{suffix}"


@pytest.fixture(scope="session")
def onceflow_kafka() -> str:
    """Bootstrap address of a real Kafka broker."""
    return _service_or_fail(kafka_bootstrap)


@pytest.fixture(scope="session")
def onceflow_postgres() -> str:
    """URL of a real Postgres server whose role may CREATE DATABASE."""
    return _service_or_fail(postgres_url)


@pytest.fixture
def onceflow_database(onceflow_postgres: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a fresh, empty database for this test only."""
    name = _unique(request, "of")
    with psycopg.connect(onceflow_postgres, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield make_conninfo(onceflow_postgres, dbname=name)
    # FORCE: a service killed by the test may leave its connections behind.
    with psycopg.connect(onceflow_postgres, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def onceflow_topic(onceflow_kafka: str, request: pytest.FixtureRequest) -> Iterator[TopicFactory]:
    """Return ``make(partitions=1) -> name``: a fresh topic, every partition led."""
    created: list[str] = []

    def make(partitions: int = 1) -> str:
        name = _unique(request, "topic")
        create_topic(onceflow_kafka, name, partitions=partitions)
        created.append(name)
        return name

    yield make
    if created:
        admin = AdminClient({"bootstrap.servers": onceflow_kafka})
        for name, future in admin.delete_topics(created, operation_timeout=30).items():
            try:
                future.result(timeout=60)
            except KafkaException as exc:  # the test may have deleted it itself
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise AssertionError(f"could not delete topic {name}: {exc}") from exc


@pytest.fixture
def onceflow_service(onceflow_kafka: str) -> Iterator[ServiceFactory]:
    """Return ``make(app, *, database, env=None, **kwargs) -> ConsumerService``:
    `app` (``"module:attribute"``, a KafkaApp) as a real process on `database`
    and this session's Kafka, not started. `env` adds to (and may override) the
    service's environment; `kwargs` go to ConsumerService. Killed at teardown."""
    made: list[ConsumerService] = []

    def make(
        app: str, *, database: str, env: dict[str, str | None] | None = None, **kwargs: Any
    ) -> ConsumerService:
        service = ConsumerService(
            app,
            env={
                "ONCEFLOW_DATABASE_URL": database,
                "ONCEFLOW_KAFKA_BOOTSTRAP_SERVERS": onceflow_kafka,
                **(env or {}),
            },
            **kwargs,
        )
        made.append(service)
        return service

    yield make
    for service in made:
        service.close()
