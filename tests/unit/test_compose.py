"""docker-compose.yml and the orders example, checked without a Docker engine.

No Docker engine runs where the suite runs, so `docker compose up` itself is
never exercised here: these tests read the compose file and hold it to what
the README and scripts/demo.py rely on (pinned images, health checks, the
onceflow commands, start order, consistent addresses) and import the app its
consumer runs, with the consumer's environment.
"""

from __future__ import annotations

import importlib.util
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from consumers import KafkaApp
from consumers.cli import load_app

ROOT = Path(__file__).resolve().parents[2]
APP_SPEC = "examples.orders.app:app"
ENV_DB = "ONCEFLOW_DATABASE_URL"
ENV_KAFKA = "ONCEFLOW_KAFKA_BOOTSTRAP_SERVERS"


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def command(service: dict[str, Any]) -> list[str]:
    raw = service["command"]
    return shlex.split(raw) if isinstance(raw, str) else [str(part) for part in raw]


def environment(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment", {})
    if isinstance(raw, list):  # the ["KEY=value", ...] form
        raw = dict(item.split("=", 1) for item in raw)
    return {str(key): str(value) for key, value in raw.items()}


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("depends_on", {})
    if isinstance(raw, list):  # the short form waits for nothing but the start
        return dict.fromkeys(raw, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in raw.items()}


def advertised(kafka: dict[str, Any]) -> set[str]:
    """host:port of every listener the broker advertises to clients."""
    listeners = environment(kafka)["KAFKA_ADVERTISED_LISTENERS"].split(",")
    return {listener.split("://", 1)[1] for listener in listeners}


@pytest.fixture
def compose_env_app(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> Iterator[KafkaApp]:
    """The KafkaApp `onceflow run` would load in the consumer container."""
    for key, value in environment(services["consumer"]).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delitem(sys.modules, "examples.orders.app", raising=False)
    try:
        yield load_app(APP_SPEC)  # what `onceflow run` does with its argument
    finally:
        # Built under the container's environment: let no later test reuse it.
        sys.modules.pop("examples.orders.app", None)


def test_the_services_exist(services: dict[str, dict[str, Any]]) -> None:
    assert {"postgres", "kafka", "migrate", "consumer"} <= set(services)


def test_every_image_is_pinned_to_a_version(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service.get("image")
        assert image or service.get("build"), f"{name} has neither image nor build"
        if image is None:
            continue
        last = str(image).rsplit("/", 1)[-1]  # a registry host may carry a port
        assert ":" in last, f"{name}: {image} names no tag"
        tag = last.split(":", 1)[1].split("@")[0]
        assert tag != "latest" and any(c.isdigit() for c in tag), f"{name}: {image} is not pinned"
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["kafka"]["image"] == "apache/kafka:3.9.1"


def test_postgres_and_kafka_have_health_checks(services: dict[str, dict[str, Any]]) -> None:
    probes = {"postgres": "pg_isready", "kafka": "kafka-topics.sh"}
    for name, tool in probes.items():
        check = services[name].get("healthcheck")
        assert check, f"{name} has no health check"
        test = check["test"]
        assert tool in (test if isinstance(test, str) else " ".join(test)), name


def test_migrate_and_consumer_run_the_onceflow_cli(services: dict[str, dict[str, Any]]) -> None:
    assert command(services["migrate"]) == ["onceflow", "migrate"]
    assert command(services["consumer"])[:3] == ["onceflow", "run", APP_SPEC]
    for name in ("migrate", "consumer"):
        build = services[name].get("build")
        context = build if isinstance(build, str) else (build or {}).get("context")
        assert context == ".", f"{name} must build the project image"
    assert (ROOT / "Dockerfile").is_file()


def test_start_order(services: dict[str, dict[str, Any]]) -> None:
    assert depends_on(services["migrate"])["postgres"] == "service_healthy"
    consumer = depends_on(services["consumer"])
    assert consumer["kafka"] == "service_healthy"
    assert consumer["migrate"] == "service_completed_successfully"
    # The broker never auto-creates topics: something must create `orders` first.
    creators = [
        name
        for name, service in services.items()
        if "command" in service and "--create" in command(service)
    ]
    assert creators, "no service creates the orders topic"
    for name in creators:
        assert "--topic=orders" in command(services[name])
        assert consumer[name] == "service_completed_successfully"


def test_addresses_name_the_services(services: dict[str, dict[str, Any]]) -> None:
    migrate, consumer = environment(services["migrate"]), environment(services["consumer"])
    assert migrate[ENV_DB] == consumer[ENV_DB]
    db = urlsplit(consumer[ENV_DB])
    pg = environment(services["postgres"])
    assert (db.scheme, db.hostname, db.port) == ("postgresql", "postgres", 5432)
    assert (db.username, db.password) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"])
    assert db.path == f"/{pg['POSTGRES_DB']}"
    bootstrap = consumer[ENV_KAFKA]
    assert bootstrap.split(":")[0] == "kafka"
    assert bootstrap in advertised(services["kafka"]), "the consumer must use a listener"
    assert "kafka:9093" not in bootstrap  # the controller's listener, not the broker's


def test_demo_uses_what_compose_publishes(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.util.spec_from_file_location("onceflow_demo", ROOT / "scripts" / "demo.py")
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, demo)  # its dataclasses look themselves up
    spec.loader.exec_module(demo)
    db = urlsplit(demo.COMPOSE_DATABASE_URL)
    pg = environment(services["postgres"])
    assert f"{db.port}:5432" in services["postgres"]["ports"]
    assert (db.username, db.password) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"])
    assert demo.COMPOSE_KAFKA in advertised(services["kafka"])
    assert f"{demo.COMPOSE_KAFKA.rsplit(':', 1)[1]}:9092" in services["kafka"]["ports"]


def test_the_consumer_app_imports_under_the_compose_environment(compose_env_app: KafkaApp) -> None:
    assert isinstance(compose_env_app, KafkaApp)
    assert compose_env_app.kafka.bootstrap_servers == "kafka:19092"


def test_the_orders_app_subscribes_as_the_readme_says(compose_env_app: KafkaApp) -> None:
    [sub] = compose_env_app.subscriptions
    assert sub.topics == ("orders",)
    assert sub.group == "billing"
    assert sub.ordering == "key"  # one customer's orders in offset order
    assert sub.model is not None and sub.model.__name__ == "Order"
    assert sub.name.startswith("kafka:billing:examples.orders.app.")


def test_the_producer_writes_to_the_subscribed_topic() -> None:
    from examples.orders import produce

    assert produce.TOPIC == "orders"
    records = list(produce.sample_records(300, run_id="t"))
    assert len(records) == 300
    assert sum(1 for _, _, valid in records if not valid) == 3  # parked in ERROR by the demo
