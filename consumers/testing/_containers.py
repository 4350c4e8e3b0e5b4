"""Postgres and Kafka for tests from testcontainers, when a Docker engine answers.

One container per service per process, stopped at exit.
"""

from __future__ import annotations

import atexit
import functools
import gc
import importlib
import threading
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any, Final

from ._postgres_native import _PG_DATABASE, _PG_ROLE

POSTGRES_IMAGE: Final = "postgres:16"
KAFKA_IMAGE: Final = "confluentinc/cp-kafka:7.6.0"

_containers: dict[str, str] = {}
_containers_lock = threading.Lock()


@functools.cache
def _docker_error() -> str | None:
    """Return None when a Docker engine answers a ping, else why not (~0.3 s, once)."""
    # docker-py leaves a socket unclosed when the daemon is absent; finalise it while
    # ResourceWarning is ignored, or pytest's filterwarnings=error reports it later.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = importlib.import_module("docker").from_env(timeout=3)
            try:
                client.ping()
            finally:
                client.close()
            error = None
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        gc.collect()
    return error


def _testcontainers_module(name: str) -> ModuleType:
    # testcontainers 4.15 moved the modules to testcontainers.community and warns
    # (DeprecationWarning: an error under our pytest settings) on the old path.
    try:
        return importlib.import_module(f"testcontainers.community.{name}")
    except ImportError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return importlib.import_module(f"testcontainers.{name}")


def _from_container(key: str, start: Callable[[], tuple[Any, str]]) -> str:
    """One container per service per process, stopped at exit (Ryuk reaps it otherwise)."""
    with _containers_lock:
        if key not in _containers:
            container, address = start()
            atexit.register(container.stop)
            _containers[key] = address
        return _containers[key]


def _start_postgres_container() -> tuple[Any, str]:
    container = _testcontainers_module("postgres").PostgresContainer(
        POSTGRES_IMAGE, username=_PG_ROLE, password=_PG_ROLE, dbname=_PG_DATABASE, driver=None
    )
    container.start()
    return container, str(container.get_connection_url())


def _start_kafka_container() -> tuple[Any, str]:
    container = (
        _testcontainers_module("kafka")
        .KafkaContainer(KAFKA_IMAGE)
        .with_kraft()
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
    )
    container.start()
    return container, str(container.get_bootstrap_server())
