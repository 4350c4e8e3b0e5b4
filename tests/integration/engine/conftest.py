"""Fixtures of the engine's integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import engine_flows
import pytest
from engine_support import Executors


@pytest.fixture
def effects_url(database_url: str) -> str:
    """This test's database, with the `effects` side table transaction steps write."""
    engine_flows.create_effects_table(database_url)
    return database_url


@pytest.fixture
def executors(effects_url: str) -> Iterator[Executors]:
    """Executor subprocesses on this test's database; any still running die at teardown."""
    spawned = Executors(effects_url)
    yield spawned
    spawned.close()
