"""The consumers' public surface, pinned; subscribe()'s errors; the direction of imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import consumers
import consumers.testing
import engine
from consumers import Event, KafkaApp
from engine import ConfigurationError

PUBLIC = [
    "Event",
    "Execution",
    "KafkaApp",
    "KafkaSettings",
    "Ordering",
    "UnknownTopicError",
    "parse_workflow_id",
    "workflow_id",
]

TESTING = [
    "ConsumerService",
    "Effects",
    "ExactlyOnceCheck",
    "Report",
    "ServiceUnavailable",
    "committed_offsets",
    "create_topic",
    "kafka_bootstrap",
    "postgres_url",
    "produce",
    "rewind_group",
    "watermarks",
]


def test_public_names_are_pinned() -> None:
    assert sorted(consumers.__all__) == PUBLIC
    assert all(hasattr(consumers, name) for name in PUBLIC)


def test_test_kit_names_are_pinned() -> None:
    assert sorted(consumers.testing.__all__) == TESTING
    assert all(hasattr(consumers.testing, name) for name in TESTING)


def test_the_test_kit_imports_without_pytest_and_starts_nothing() -> None:
    code = (
        "import sys, threading, consumers.testing; "
        "assert 'pytest' not in sys.modules, 'pytest imported'; "
        "assert threading.active_count() == 1, 'a thread started'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def imported_modules(package: Path) -> Iterator[tuple[Path, str]]:
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, alias.name
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield path, node.module


def test_engine_never_imports_consumers() -> None:
    engine_dir = Path(engine.__file__).resolve().parent
    found = [
        f"{path.name}: {module}"
        for path, module in imported_modules(engine_dir)
        if module == "consumers" or module.startswith("consumers.")
    ]
    assert not found, f"engine imports consumers (DESIGN.md §2): {found}"
    assert any(True for _ in imported_modules(engine_dir)), "no imports found: the walk is broken"


# -- subscribe() ---------------------------------------------------------------


class Order(BaseModel):
    seq: int


@pytest.fixture
def app() -> Iterator[KafkaApp]:
    # Nothing connects until start(): no Postgres and no Kafka are needed here.
    eng = engine.Engine("postgresql://nobody@127.0.0.1:1/nothing")
    yield KafkaApp(eng, {"bootstrap.servers": "127.0.0.1:1"})


def handler(event: Event[Any]) -> None:
    pass


def test_subscribe_registers_a_workflow_per_group_and_topic(app: KafkaApp) -> None:
    app.subscribe("orders", group="billing", model=Order)(handler)

    def other(event: Event[Any]) -> None:
        pass

    app.subscribe("orders", group="shipping")(other)  # another group: fine
    subs = app.subscriptions
    assert [(s.topics, s.group) for s in subs] == [
        (("orders",), "billing"),
        (("orders",), "shipping"),
    ]
    assert subs[0].name != subs[1].name
    assert subs[0].ordering == "key" and subs[0].model is Order


def test_the_same_topic_twice_in_one_group_is_refused(app: KafkaApp) -> None:
    app.subscribe("orders", "refunds", group="billing")(handler)

    def again(event: Event[Any]) -> None:
        pass

    with pytest.raises(ConfigurationError, match="already subscribed"):
        app.subscribe("refunds", group="billing")(again)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ordering": "offset"}, "ordering must be one of"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"model": dict}, "pydantic"),
        ({"group": ""}, "group"),
        ({"consumer_config": {"enable.auto.offset.store": True}}, "enable.auto.offset.store"),
        ({"consumer_config": {"group.id": "other"}}, "group.id"),
    ],
)
def test_bad_subscriptions_are_refused_with_a_clear_error(
    app: KafkaApp, kwargs: dict[str, Any], message: str
) -> None:
    args: dict[str, Any] = {"group": "billing", **kwargs}
    with pytest.raises(ConfigurationError, match=message):
        app.subscribe("orders", **args)
    assert app.subscriptions == []


def test_subscribe_needs_a_topic(app: KafkaApp) -> None:
    with pytest.raises(ConfigurationError, match="topic"):
        app.subscribe(group="billing")


@pytest.mark.parametrize("key", ["enable.auto.offset.store", "group.id"])
def test_reserved_kafka_settings_are_refused_by_the_app_too(key: str) -> None:
    eng = engine.Engine("postgresql://nobody@127.0.0.1:1/nothing")
    with pytest.raises(ConfigurationError, match=key):
        KafkaApp(eng, {"bootstrap.servers": "127.0.0.1:1", key: "x"})


def test_start_without_subscriptions_says_what_to_do(app: KafkaApp) -> None:
    with pytest.raises(ConfigurationError, match="subscribe"):
        app.start()
