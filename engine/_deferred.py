"""The connection an inline transaction step gets: statements nobody reads
are sent later, in runs.

An inline batch runs hundreds of transaction steps on one connection, in one
transaction. Most of them write (`conn.execute("INSERT …", params)`) and never
look at the result; psycopg's per-statement path (a cursor, adapting, sending,
waiting for the pipeline) then costs more than the step itself. So `execute`
here only queues the statement and hands back a placeholder cursor. The
queue goes out, in order, before anything that needs the server: reading any
result, any other use of the connection, and the end of the batch. A run of
the same statement with different parameters goes out as one `executemany`
(DESIGN.md §4: the SQL is the user's, unchanged; only its transport is
batched).

Order is exactly the order of the calls: runs are consecutive statements,
and every other use of the connection first sends what is queued. What
changes is *when* an error shows: a failing deferred statement raises at the
flush, not at its `execute`. An inline batch treats any error as a reason to
roll back and go the ordinary way (_inline.py), where each step runs alone
and sees its own error in place, so the outcome is the same.

Placeholder cursors still alive at a flush (the step kept one, to read later)
are sent alone on a real cursor, whose answers the placeholder then serves.
Once a step uses anything but `execute` (cursors, nested transactions, COPY),
nothing more of that step is deferred: the connection is handed through.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql

from ._multirow import Tables, numeric_ints, pieces, shape


class DeferredCursor:
    """What `execute` returns: the real cursor, once the statement was sent."""

    __slots__ = ("__weakref__", "_cursor", "_owner")

    def __init__(self, owner: DeferringConnection) -> None:
        self._owner = owner
        self._cursor: psycopg.Cursor[Any] | None = None

    def __getattr__(self, name: str) -> Any:
        # Anything done through this cursor (reading its rows, or running
        # another statement on it) comes after every call made before it.
        if self._cursor is None or self._owner._queue:
            self._owner.flush()
        assert self._cursor is not None, "a deferred statement was sent without its cursor"
        return getattr(self._cursor, name)

    def __iter__(self) -> Any:
        return iter(self.__getattr__("fetchall")())

    def __enter__(self) -> DeferredCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._cursor is not None:
            self._cursor.close()


# One queued statement: the query, its parameters, and its placeholder (weak:
# a placeholder nobody holds any more lets the statement join a run).
_Queued = tuple[Any, Any, "weakref.ref[DeferredCursor]"]


class DeferringConnection:
    """A psycopg connection whose `execute` is deferred; see the module doc."""

    def __init__(self, conn: psycopg.Connection[Any], tables: Tables | None = None) -> None:
        self._conn = conn
        # When given, runs of a single-row INSERT go out multi-row (_multirow.py).
        self._tables = tables
        self._queue: list[_Queued] = []
        self._direct = False
        self.sent = 0  # statements sent (a figure for tests and benchmarks)
        self.multirow = 0  # runs sent as multi-row INSERTs (likewise)

    def begin_step(self) -> None:
        """A new transaction step starts: defer again."""
        self._direct = False

    def execute(
        self,
        query: Any,
        params: Any = None,
        *,
        prepare: bool | None = None,
        binary: bool = False,
    ) -> Any:
        if self._direct or prepare is not None or binary or params is None:
            # Options of its own, or no parameters (DDL, SET, …): sent now.
            self.flush()
            return self._conn.execute(query, params, prepare=prepare, binary=binary)
        # The parameters as they are now: a caller may reuse the object for
        # its next statement before this one is sent (a shallow copy).
        # (A tuple is kept as it is; the type test first spares the slow
        # isinstance of an ABC on every statement.)
        if type(params) is not tuple:
            params = dict(params) if isinstance(params, Mapping) else tuple(params)
        placeholder = DeferredCursor(self)
        self._queue.append((query, params, weakref.ref(placeholder)))
        return placeholder

    def __getattr__(self, name: str) -> Any:
        # Anything else (cursor(), transaction(), copy, commit, …) needs the
        # queue sent first, and uses the connection directly from then on.
        self.flush()
        self._direct = True
        return getattr(self._conn, name)

    def flush(self) -> None:
        """Send every queued statement, in order."""
        queue, self._queue = self._queue, []
        run: list[Any] = []
        run_query: Any = None
        for query, params, ref in queue:
            placeholder = ref()
            if placeholder is None and (not run or query is run_query or query == run_query):
                run.append(params)
                run_query = query
                continue
            self._send_run(run_query, run)
            run = []
            if placeholder is None:
                run, run_query = [params], query
            else:
                placeholder._cursor = self._conn.execute(query, params)
                self.sent += 1
        self._send_run(run_query, run)

    def _send_run(self, query: Any, run: list[Any]) -> None:
        if not run:
            return
        if len(run) == 1:
            self._conn.execute(query, run[0])
        elif not self._send_multirow(query, run):
            with self._conn.cursor() as cur:
                cur.executemany(query, run)
        self.sent += len(run)

    def _send_multirow(self, query: Any, run: list[Any]) -> bool:
        """Send `run` as multi-row INSERTs if its statement qualifies."""
        if isinstance(query, sql.Composable):
            query = query.as_string(self._conn)
        if self._tables is None or (found := shape(query)) is None:
            return False
        try:
            flat = found.flat(run)
        except (ValueError, KeyError, TypeError):
            return False  # rows that do not fit: psycopg says why, unbatched
        if not self._tables.allows(self._conn, found.table):
            return False
        width = found.width
        with numeric_ints(psycopg.RawCursor(self._conn)) as cur:
            for start, rows in pieces(len(run), width):
                cur.execute(found.query(rows), flat[start * width : (start + rows) * width])
        self.multirow += 1
        return True
