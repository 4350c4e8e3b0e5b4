"""Postgres databases and engines for the integration tests.

Every test gets a database of its own, cloned from one migrated template
(`CREATE DATABASE … TEMPLATE`): a clone takes a fraction of a second, where
migrating afresh per test would cost more, and tests never see each other's
rows (STYLE.md, Tests).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

import engine

# Short enough that takeover tests finish in seconds, long enough that a live
# executor on a loaded 2-core machine never misses it.
TEST_LEASE = 2.0
TEST_HEARTBEAT = 0.3

EngineFactory = Callable[..., engine.Engine]


def create_database(
    server_url: str, name: str, *, template: str | None = None, icu_locale: str | None = None
) -> str:
    """Create database `name` (optionally as a copy of `template`, or with an
    ICU collation such as "en-US" as its default); return its URL."""
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(template))
    elif icu_locale is not None:
        query += sql.SQL(
            " TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE {}"
        ).format(sql.Literal(icu_locale))
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(query)
    return make_conninfo(server_url, dbname=name)


def drop_database(server_url: str, name: str) -> None:
    # FORCE: a test that failed may leave engine threads connected.
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def template_database(postgres_server_url: str) -> Iterator[str]:
    """Name of a database migrated once per session, the template of every test's."""
    name = f"onceflow_template_{uuid.uuid4().hex[:12]}"
    url = create_database(postgres_server_url, name)
    try:
        engine.migrate_database(url)
        yield name
    finally:
        drop_database(postgres_server_url, name)


@pytest.fixture
def database_url(
    postgres_server_url: str, template_database: str, unique_name: Callable[[str], str]
) -> Iterator[str]:
    """URL of a fresh, migrated database for this test only, dropped at teardown."""
    name = unique_name("onceflow")
    url = create_database(postgres_server_url, name, template=template_database)
    yield url
    drop_database(postgres_server_url, name)


@pytest.fixture
def empty_database_url(
    postgres_server_url: str, unique_name: Callable[[str], str]
) -> Iterator[str]:
    """URL of a fresh database with no Onceflow schema (migration tests)."""
    name = unique_name("onceflow_empty")
    url = create_database(postgres_server_url, name)
    yield url
    drop_database(postgres_server_url, name)


@pytest.fixture
def en_us_database_url(
    postgres_server_url: str, unique_name: Callable[[str], str]
) -> Iterator[str]:
    """A fresh, migrated database whose default collation is ICU's en-US, as a
    cluster initialised in a user's language has (the test cluster's is "C")."""
    name = unique_name("onceflow_en_us")
    url = create_database(postgres_server_url, name, icu_locale="en-US")
    try:
        engine.migrate_database(url)
        yield url
    finally:
        drop_database(postgres_server_url, name)


@pytest.fixture
def engine_factory(database_url: str) -> Iterator[EngineFactory]:
    """Return `make(**settings) -> Engine` on this test's database (not launched).

    Defaults to a short lease and heartbeat; every engine made is shut down at
    teardown, before the database is dropped. To build one on another
    database (`database_url=...`), request that database's fixture first, so
    that it is dropped after the engines stop.
    """
    made: list[engine.Engine] = []

    def make(**settings: Any) -> engine.Engine:
        settings.setdefault("lease", TEST_LEASE)
        settings.setdefault("heartbeat", TEST_HEARTBEAT)
        eng = engine.Engine(settings.pop("database_url", database_url), **settings)
        made.append(eng)
        return eng

    yield make
    for eng in reversed(made):
        eng.shutdown(timeout=2.0)
