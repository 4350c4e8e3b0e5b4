"""Fixtures of the consumer tests: apps in process, services as subprocesses, checks.

Every test gets its own database (with an `effects` table), topic and group,
so tests never see each other's records, rows or offsets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from apps.flow import create_effects_table
from consumer_support import APPS_ROOT, EFFECTS, HEARTBEAT, LEASE
from psycopg.conninfo import conninfo_to_dict

import engine
from consumers import KafkaApp
from consumers.testing import ConsumerService, ExactlyOnceCheck
from consumers.testing._services import NativeKafka, NativePostgres, ServiceUnavailable


@pytest.fixture
def effects_url(database_url: str) -> str:
    """This test's database, with the flow's `effects` table."""
    create_effects_table(database_url)
    return database_url


@pytest.fixture
def topic_group(
    kafka_topic_factory: Callable[..., str], unique_name: Callable[[str], str]
) -> Callable[..., tuple[str, str]]:
    """Return `make(partitions=1) -> (topic, group)`: a fresh topic and group."""

    def make(partitions: int = 1) -> tuple[str, str]:
        return kafka_topic_factory(partitions), unique_name("group")

    return make


@pytest.fixture
def make_app(effects_url: str, kafka_bootstrap: str) -> Iterator[Callable[..., KafkaApp]]:
    """Return `make(**engine_settings) -> KafkaApp` on this test's database; every
    app made is stopped at teardown."""
    made: list[KafkaApp] = []

    def make(*, batch_size: int = 500, stop_timeout: float = 5.0, **settings: Any) -> KafkaApp:
        settings.setdefault("lease", LEASE)
        settings.setdefault("heartbeat", HEARTBEAT)
        eng = engine.Engine(effects_url, **settings)
        app = KafkaApp(
            eng,
            {"bootstrap.servers": kafka_bootstrap},
            batch_size=batch_size,
            stop_timeout=stop_timeout,
        )
        made.append(app)
        return app

    yield make
    for app in reversed(made):
        app.stop()


@pytest.fixture
def make_service(
    effects_url: str, kafka_bootstrap: str, tmp_path: Path
) -> Iterator[Callable[..., ConsumerService]]:
    """Return `make(topic, group, **env) -> ConsumerService` running
    `apps.service:app` on this test's database (not started). Services still
    running at teardown are killed; their logs stay in the test's tmp_path."""
    made: list[ConsumerService] = []

    def make(topic: str, group: str, **env: str | None) -> ConsumerService:
        service = ConsumerService(
            "apps.service:app",
            env={
                "ONCEFLOW_DATABASE_URL": effects_url,
                "ONCEFLOW_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                "ONCEFLOW_LEASE": str(LEASE),
                "ONCEFLOW_HEARTBEAT": str(HEARTBEAT),
                "ONCEFLOW_FAULT": None,
                "FLOW_TOPIC": topic,
                "FLOW_GROUP": group,
                **env,
            },
            pythonpath=[APPS_ROOT],
            args=["--stop-timeout", "5", "--progress-every", "1"],
            log_path=tmp_path / f"service-{len(made)}.log",
        )
        made.append(service)
        return service

    yield make
    for service in made:
        service.close()


@pytest.fixture
def make_check(effects_url: str, kafka_bootstrap: str) -> Callable[..., ExactlyOnceCheck]:
    """Return `make(topic, group, expected=None) -> ExactlyOnceCheck` with the flow's effects."""

    def make(topic: str, group: str, expected: int | None = None) -> ExactlyOnceCheck:
        return ExactlyOnceCheck(
            effects_url,
            kafka_bootstrap,
            topic=topic,
            group=group,
            expected=expected,
            effects=EFFECTS,
        )

    return make


@pytest.fixture
def native_postgres(postgres_server_url: str) -> Iterator[NativePostgres]:
    """The native test Postgres server, for a test that stops and starts it.

    Only that server can be stopped and started by the test kit; a run pointed at
    another one (ONCEFLOW_TEST_DATABASE_URL, testcontainers) fails here with a
    message instead of skipping the test. Whatever the test does, the server is
    running again at teardown (other tests share it).
    """
    server = NativePostgres()

    def address(url: str) -> tuple[str, str]:
        info = conninfo_to_dict(url)
        return str(info.get("host")), str(info.get("port"))

    try:
        native = server.url
    except ServiceUnavailable:
        native = ""
    if not native or address(native) != address(postgres_server_url):
        pytest.fail(
            f"this test stops and restarts the Postgres server; the kit can do that only "
            f"to its native server, and the tests use {address(postgres_server_url)}. "
            "Run the tests against `python -m consumers.testing.services up` "
            "(or leave ONCEFLOW_TEST_DATABASE_URL unset without Docker).",
            pytrace=False,
        )
    try:
        yield server
    finally:
        server.start()  # a no-op if it runs


@pytest.fixture
def native_kafka(kafka_bootstrap: str) -> Iterator[NativeKafka]:
    """The native test broker, for a test that stops and starts it (see native_postgres)."""
    broker = NativeKafka()
    try:
        native = broker.bootstrap
    except ServiceUnavailable:
        native = ""
    if native != kafka_bootstrap:
        pytest.fail(
            f"this test stops and restarts the Kafka broker; the kit can do that only to its "
            f"native broker, and the tests use {kafka_bootstrap}. Run the tests against "
            "`python -m consumers.testing.services up` (or leave ONCEFLOW_TEST_KAFKA unset "
            "without Docker).",
            pytrace=False,
        )
    try:
        yield broker
    finally:
        broker.start()  # a no-op if it runs
