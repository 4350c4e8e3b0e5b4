"""The one module that talks to psycopg: connections, pools, error translation.

Everything else in the engine goes through `Database`, so a driver error
becomes an Onceflow error with advice in exactly one place.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import orjson
import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool, PoolTimeout

from ._errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    OnceflowError,
    SchemaNotMigratedError,
)

log = logging.getLogger("onceflow.engine")

T = TypeVar("T")

Row = dict[str, Any]
Connection = psycopg.Connection[Row]

# Failures worth retrying: the server went away or is restarting (or another
# executor ended this one's connection: Engine._end_dead_transactions).
RETRYABLE = (psycopg.OperationalError, pg_errors.AdminShutdown, PoolTimeout)


def session_tag(executor_id: str) -> str:
    """The application_name of an executor's writing connections, so that
    other executors can find the transactions it left open once it is dead
    (queries.sql: end_dead_transactions computes the same). Postgres keeps 63
    bytes of it: a longer ID is shortened to a digest."""
    tag = f"onceflow {executor_id}"
    if len(tag.encode()) <= 63:
        return tag
    return f"onceflow {hashlib.md5(executor_id.encode()).hexdigest()[:20]}"


def _configure(conn: Connection) -> None:
    # jsonb arrives through orjson, the same parser the engine writes with.
    set_json_loads(orjson.loads, conn)


def translate(exc: Exception, url: str) -> OnceflowError:
    """Turn a driver error into an Onceflow error that says what to do."""
    where = redact(url)
    if isinstance(exc, pg_errors.UndefinedTable | pg_errors.InvalidSchemaName):
        return SchemaNotMigratedError(
            f"the Onceflow tables are missing in {where}: run `onceflow migrate` "
            "or launch the engine with migrate=True"
        )
    if isinstance(exc, psycopg.ProgrammingError) and "invalid" in str(exc).lower():
        return ConfigurationError(
            f"the database URL {where} is not valid ({exc}); expected "
            "postgresql://user:password@host:port/dbname"
        )
    message = str(exc).strip()
    if "does not exist" in message and "database" in message:
        return DatabaseUnavailableError(
            f"{message} at {where}: create it (createdb) or fix ONCEFLOW_DATABASE_URL"
        )
    if isinstance(exc, RETRYABLE):
        return DatabaseUnavailableError(
            f"cannot reach Postgres at {where}: {message}; check that the server is "
            "running and ONCEFLOW_DATABASE_URL is right"
        )
    return OnceflowError(f"database error at {where}: {type(exc).__name__}: {message}")


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparseable database URL>"
    if "password" in info:
        info["password"] = "***"
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in info.items() if v is not None})


def check_url(url: str) -> None:
    try:
        psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise ConfigurationError(
            f"the database URL is not valid ({exc}); expected "
            "postgresql://user:password@host:port/dbname"
        ) from None


class Database:
    """A pool for short queries, plus dedicated connections for long-lived roles."""

    def __init__(
        self, url: str, *, pool_size: int, connect_timeout: float = 10.0, tag: str | None = None
    ) -> None:
        check_url(url)
        self.url = url
        self._tag = tag
        self._connect_timeout = connect_timeout
        self._pool_size = pool_size
        self._pool = self._new_pool()

    def _new_pool(self) -> ConnectionPool[Connection]:
        return ConnectionPool(
            self.url,
            min_size=1,
            max_size=self._pool_size,
            kwargs={"row_factory": dict_row, "autocommit": True},
            configure=_configure,
            open=False,
            timeout=30.0,
            name="onceflow",
        )

    def open(self) -> None:
        # Connect once first, so a wrong URL or missing database fails fast
        # with its real cause instead of a pool timeout.
        self.connect().close()
        self._pool.open(wait=False)

    def close(self) -> None:
        """Close the pool; a later open() starts a new one (a pool is single-use)."""
        self._pool.close()
        self._pool = self._new_pool()

    def connect(
        self, *, autocommit: bool = True, dict_rows: bool = True, tagged: bool = False
    ) -> Connection:
        """A connection outside the pool (writers, recording, migrations).

        `tagged`: named after this executor (its application_name is the
        `tag`), for connections whose transactions lock workflow rows. If the
        executor freezes or its host dies with such a transaction open, the
        rows stay locked and claims skip them, until it wakes or TCP gives up
        on it (hours); with the tag, other executors end that transaction once
        its lease has run out (Engine._end_dead_transactions).
        """
        try:
            conn: Connection = psycopg.connect(
                self.url,
                row_factory=dict_row if dict_rows else tuple_row,  # type: ignore[arg-type]
                autocommit=autocommit,
                connect_timeout=max(1, int(self._connect_timeout)),
                application_name=self._tag if tagged else None,  # None: the URL's, if any
            )
        except (psycopg.Error, OSError) as exc:
            raise translate(exc, self.url) from exc
        _configure(conn)
        return conn

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        """A pooled autocommit connection; driver errors come out translated."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except (psycopg.Error, PoolTimeout) as exc:
            raise translate(exc, self.url) from exc

    def fetch_all(self, query: Any, params: dict[str, Any]) -> list[Row]:
        with self.connection() as conn:
            return conn.execute(query, params).fetchall()

    def fetch_one(self, query: Any, params: dict[str, Any]) -> Row | None:
        with self.connection() as conn:
            return conn.execute(query, params).fetchone()

    def execute(self, query: Any, params: dict[str, Any]) -> int:
        with self.connection() as conn:
            return conn.execute(query, params).rowcount

    def retrying(
        self,
        fn: Callable[[], T],
        *,
        stop: Callable[[], bool] = lambda: False,
        what: str = "database call",
        max_delay: float = 5.0,
    ) -> T:
        """Run `fn` until it stops failing with a reachability error, with backoff.

        Used where giving up would lose work (DESIGN.md §7: Postgres down means
        wait and retry, never drop). Other errors propagate at once.
        """
        delay = 0.05
        while True:
            try:
                return fn()
            except DatabaseUnavailableError as exc:
                if stop():
                    raise
                log.warning("%s failed, retrying in %.2fs: %s", what, delay, exc)
            time.sleep(delay)
            delay = min(max_delay, delay * 2)
