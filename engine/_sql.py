"""The engine's SQL: named blocks of queries.sql, composed once per schema."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from psycopg import sql

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def _raw_queries() -> dict[str, str]:
    text = resources.files("engine").joinpath("queries.sql").read_text(encoding="utf-8")
    parts = _NAME.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts), 2)}


class Queries:
    """Every engine query, bound to one schema as a quoted identifier."""

    def __init__(self, schema: str) -> None:
        ident = sql.Identifier(schema)
        self._composed = {
            name: sql.SQL(body).format(schema=ident) for name, body in _raw_queries().items()
        }

    def __getitem__(self, name: str) -> sql.Composed:
        return self._composed[name]

    def names(self) -> list[str]:
        return sorted(self._composed)
