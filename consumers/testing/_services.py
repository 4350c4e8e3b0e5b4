"""Real Postgres and a real Kafka broker for tests: the one implementation.

Onceflow's exactly-once argument rests on real Postgres transactions and real Kafka
consumer-group semantics, so its tests (and users' tests of their own workflows) run
against the real services (DESIGN.md §8). Each service is resolved in this order:

1. an environment variable naming a service someone already runs
   (``ONCEFLOW_TEST_DATABASE_URL``, ``ONCEFLOW_TEST_KAFKA``);
2. testcontainers, when a Docker engine answers;
3. a private native process under a state directory (``ONCEFLOW_SERVICES_DIR``,
   default ``~/.cache/onceflow/services``): Postgres from the OS packages, Kafka from
   Maven Central jars. It outlives the test session so the next one reuses it.

When all fail the caller gets ``ServiceUnavailable`` saying how to provide one: a test
run without its services must fail loudly, never skip.

Importing this module starts nothing and imports nothing else from Onceflow.

This module chooses among the sources; each lives in its own module:
`_containers` (testcontainers), `_postgres_native` and `_kafka_native` (the native
servers), `_native` (what those share, and `ServiceUnavailable`). The names tests
and scripts use are re-exported here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Final

from ._containers import (
    KAFKA_IMAGE,
    POSTGRES_IMAGE,
    _docker_error,
    _from_container,
    _start_kafka_container,
    _start_postgres_container,
)
from ._kafka_native import KAFKA_VERSION, NativeKafka, _native_kafka_bootstrap
from ._native import ENV_SERVICES_DIR, ServiceUnavailable, default_state_dir
from ._postgres_native import NativePostgres, _native_postgres_url

__all__ = [
    "ENV_DATABASE_URL",
    "ENV_KAFKA",
    "ENV_SERVICES_DIR",
    "KAFKA_IMAGE",
    "KAFKA_VERSION",
    "POSTGRES_IMAGE",
    "NativeKafka",
    "NativePostgres",
    "ServiceUnavailable",
    "default_state_dir",
    "kafka_bootstrap",
    "postgres_url",
]

ENV_DATABASE_URL: Final = "ONCEFLOW_TEST_DATABASE_URL"
ENV_KAFKA: Final = "ONCEFLOW_TEST_KAFKA"


def postgres_url() -> str:
    """Return a Postgres server URL for a role that may CREATE DATABASE.

    Raises:
        ServiceUnavailable: no source worked; the message lists each one's error.
    """
    return _resolve(
        "Postgres",
        ENV_DATABASE_URL,
        "postgresql://USER:PASSWORD@HOST:5432/postgres (a role allowed to CREATE DATABASE)",
        POSTGRES_IMAGE,
        _start_postgres_container,
        _native_postgres_url,
    )


def kafka_bootstrap() -> str:
    """Return the bootstrap address (``host:port``) of a Kafka broker for tests.

    Raises:
        ServiceUnavailable: no source worked; the message lists each one's error.
    """
    return _resolve(
        "Kafka",
        ENV_KAFKA,
        "HOST:9092 (a broker with auto.create.topics.enable=false)",
        KAFKA_IMAGE,
        _start_kafka_container,
        _native_kafka_bootstrap,
    )


def _resolve(
    service: str,
    env_var: str,
    env_example: str,
    image: str,
    start_container: Callable[[], tuple[Any, str]],
    start_native: Callable[[], str],
) -> str:
    if value := os.environ.get(env_var):
        return value
    tried: list[str] = []
    if (docker_error := _docker_error()) is None:
        try:
            return _from_container(service, start_container)
        except Exception as exc:  # fall through to the native service, but say why
            tried.append(f"testcontainers {image}: {_describe(exc)}")
    else:
        tried.append(f"Docker engine: {docker_error}")
    try:
        return start_native()
    except Exception as exc:
        tried.append(f"native {service}: {_describe(exc)}")
    raise ServiceUnavailable(
        "\n".join(
            [
                f"No {service} for the integration tests. Provide one in any of these ways:",
                f"  - export {env_var}={env_example}",
                f"  - start a Docker engine (testcontainers then runs {image})",
                "  - run `python -m consumers.testing.services up` (private native Postgres and"
                " Kafka; it prints the export lines)",
                "What was tried:",
                *(f"  - {line}" for line in tried),
            ]
        )
    )


def _describe(exc: Exception) -> str:
    return str(exc) if isinstance(exc, ServiceUnavailable) else f"{type(exc).__name__}: {exc}"
