"""Runs of one single-row INSERT as multi-row INSERTs.

An inline batch's transaction steps mostly write one row each, with the same
statement: `INSERT INTO t (a, b) VALUES (%s, %s)`. Sent as an `executemany`,
Postgres still runs each row as a statement of its own: about 15 µs of server
time and 22 µs of psycopg's per row, measured. The same rows as one
`INSERT INTO t (a, b) VALUES (…), (…), …` cost about 6 µs and 4 µs.
SQLAlchemy's "insertmanyvalues" and psycopg2's `execute_values` do the same.

Only statements whose meaning cannot change are rewritten: the whole
statement is `INSERT INTO <table> [(<columns>)] VALUES (<items>)`, optionally
followed by `ON CONFLICT … DO NOTHING`, where every item is a placeholder
(`%s` or `%t`, with an optional `::type` cast), a number, NULL, TRUE, FALSE
or DEFAULT. No quotes, comments, subqueries, functions or RETURNING: nothing
that could read the table or be told rows apart. And the table must be a
plain table with no trigger but BEFORE ROW ones, no rule and no foreign key
to itself: nothing that would see one statement where the user wrote many
(`Tables` asks the catalog, table_sees_statements in queries.sql, and asks
again now and then). Anything else goes as before, as an `executemany` of
the user's SQL.

Rows of a run are sent in pieces of 2^k rows, so that a few statement texts
(and prepared statements) serve runs of any length.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.numeric import IntNumericDumper

# Possessive and atomic: a name is never split into several (which would
# make a statement that fails to match backtrack exponentially).
_WORD = r"[A-Za-z_][A-Za-z0-9_$]*+"
_NAME = rf'(?>{_WORD}|"(?:[^"]|"")++")'  # an identifier, maybe quoted
_NAMES = rf"\((?:{_NAME}|[,\s])*\)"  # a list of them
_INSERT = re.compile(
    rf"""\s*INSERT\s+INTO\s+(?P<table>{_NAME}(?:\s*\.\s*{_NAME})?)
        \s*(?P<columns>{_NAMES})?
        \s*VALUES\s*\((?P<body>(?:%\({_WORD}\)|[^()])*)\)
        \s*(?P<tail>ON\s+CONFLICT\s*(?:{_NAMES})?\s*DO\s+NOTHING)?
        \s*;?\s*""",
    re.IGNORECASE | re.VERBOSE,
)
_CAST = rf"(?:\s*::\s*{_WORD}(?:\s*\[\s*\])?)?"
_ITEM = re.compile(
    rf"""\s*(?:
        %\((?P<name>{_WORD})\)[st]{_CAST}     # a named placeholder
      | (?P<positional>%[st]){_CAST}          # a positional one
      | [0-9]+(?:\.[0-9]+)?{_CAST}             # a number
      | (?:NULL|TRUE|FALSE|DEFAULT)            # a constant
    )\s*""",
    re.IGNORECASE | re.VERBOSE,
)
# Postgres takes at most 65,535 parameters per statement.
MAX_PARAMS = 65_535
MAX_ROWS = 128


@dataclass(frozen=True)
class Shape:
    """A statement that qualifies: how to write n of its rows as one."""

    table: str
    head: str  # `INSERT INTO t (a, b) VALUES `
    row: str  # `({}, {}::int)`: where each row's parameters go
    tail: str  # ` ON CONFLICT DO NOTHING` or ""
    names: tuple[str, ...] | None  # parameter names in order, if named
    width: int  # parameters per row

    def query(self, rows: int) -> str:
        """`rows` rows' statement, with Postgres's own $n placeholders: sent
        on a RawCursor, which leaves the text alone. (psycopg would otherwise
        parse every long statement with many parameters afresh: it caches
        only short ones, and parsing one of 64 rows costs more than its rows.)"""
        return _query(self, rows)

    def flat(self, params: Sequence[Any]) -> list[Any]:
        """All rows' parameters in statement order; raises ValueError when a
        row does not fit the statement (psycopg then says why, unbatched)."""
        out: list[Any] = []
        names, width = self.names, self.width
        for p in params:
            if names is not None:
                if not isinstance(p, Mapping):
                    raise ValueError("named placeholders need a mapping")
                out.extend(p[n] for n in names)
            else:
                # A tuple (what DeferringConnection keeps) is no mapping: the
                # type test spares the slow isinstance of an ABC per row.
                if (type(p) is not tuple and isinstance(p, Mapping)) or len(p) != width:
                    raise ValueError("wrong number of parameters")
                out.extend(p)
        return out


def shape(query: object) -> Shape | None:
    """The Shape of `query`, or None when it does not qualify (module doc)."""
    if isinstance(query, bytes):
        try:
            query = query.decode()
        except UnicodeDecodeError:
            return None
    return _shape(query) if isinstance(query, str) else None


@functools.lru_cache(maxsize=256)
def _shape(query: str) -> Shape | None:
    # No string literals, dollar quotes, comments or operators: `"` only in
    # identifiers, where the grammar below allows it.
    if any(c in query for c in "'$-/"):
        return None
    m = _INSERT.fullmatch(query)
    if m is None:
        return None
    # `%%` outside the values is psycopg's `%`, but the head goes out as written.
    if "%" in query[: m.start("body")] or "%" in query[m.end("body") :]:
        return None
    items = m["body"].split(",")
    names: list[str] = []
    positional = 0
    row: list[str] = []
    for item in items:
        im = _ITEM.fullmatch(item)
        if im is None:
            return None
        if im["name"] is not None:
            names.append(im["name"])
            row.append(re.sub(r"%\([^)]*\)[st]", "{}", item, count=1).strip())
        else:
            positional += im["positional"] is not None
            row.append(re.sub(r"%[st]", "{}", item, count=1).strip())
    if names and positional:
        return None  # psycopg refuses the mix; let it say so
    width = len(names) or positional
    if width == 0:
        return None
    head = query[: m.start("body")].rstrip()[:-1].rstrip()  # up to VALUES
    return Shape(
        table=m["table"],
        head=head + " ",
        row="(" + ", ".join(row) + ")",
        tail=f" {m['tail']}" if m["tail"] else "",
        names=tuple(names) if names else None,
        width=width,
    )


@functools.lru_cache(maxsize=64)
def _query(shape: Shape, rows: int) -> str:
    row = shape.row.replace("{}", "${}")
    width = shape.width
    values = (row.format(*range(i * width + 1, (i + 1) * width + 1)) for i in range(rows))
    return shape.head + ", ".join(values) + shape.tail


def pieces(rows: int, width: int) -> Iterator[tuple[int, int]]:
    """(start, length) of the statements `rows` rows go out as: powers of
    two, largest first, each within Postgres's parameter limit."""
    most = min(MAX_ROWS, MAX_PARAMS // width)
    size = 1 << (most.bit_length() - 1)
    start = 0
    while start < rows:
        while size > rows - start:
            size >>= 1
        yield start, size
        start += size


def numeric_ints(cur: psycopg.RawCursor[Any]) -> psycopg.RawCursor[Any]:
    """`cur`, sending every Python int as numeric (bools keep their own dumper).

    psycopg's own dumper types each int by its size (int2, int4, int8 or
    numeric), and the parameter types are part of the key psycopg prepares a
    statement under: a multi-row statement's key changed from batch to batch
    with the values (an offset passing 32,767, say), it never reached the
    prepare threshold, and Postgres parsed and planned it on every execution
    (perf: parse analysis and planning of a 64-row VALUES list were a fifth
    of the backend's samples). One type for every int keeps one key. Numeric
    holds any int, and Postgres converts it to the column's type by the same
    assignment casts it used for int2, int4 and int8 (only an `oid` column,
    which has no cast from numeric, would refuse it). psycopg's dumper for it
    is in C: a dumper written here, in Python, cost 12,800 instructions more
    per event on the consumer's thread (`bench.instructions`), this one none.
    bench/inline_micro.py, interleaved: Postgres 6.7-7.2 µs per event against
    9.7-10.3 before."""
    cur.adapters.register_dumper(int, IntNumericDumper)
    return cur


class Tables:
    """Which tables take multi-row INSERTs, checked in the catalog and
    remembered for `recheck` seconds (a trigger created later is seen by
    then). One per engine; used from the recording threads."""

    def __init__(self, query: Any, recheck: float = 30.0) -> None:
        self._query = query  # queries.sql: table_sees_statements
        self.recheck = recheck
        self._known: dict[str, tuple[bool, float]] = {}

    def allows(self, conn: psycopg.Connection[Any], table: str) -> bool:
        now = time.monotonic()
        known = self._known.get(table)
        if known is not None and now - known[1] < self.recheck:
            return known[0]
        row = conn.execute(self._query, {"table": table}).fetchone()
        allowed = row is not None and not row[0]
        self._known[table] = (allowed, now)
        return allowed
