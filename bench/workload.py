"""The benchmark's workload: the records, the work per record, the effects table.

Every system under test does the same per record: validate the JSON value
into `BenchRecord`, run `step_a` and `step_b` (trivial compute), and insert one
row into the effects table. Onceflow wraps the two functions as plain steps
and the insert as a transaction step; the plain consumers call them directly.

The effects row carries the record's position and its timestamp, and
`done_at` is `clock_timestamp()` when the insert ran, so latency and
exactly-once are both read from Postgres afterwards. No unique constraint:
a duplicate must be countable, not an error.
"""

from __future__ import annotations

import zlib
from typing import Final

import orjson
from psycopg import sql
from pydantic import BaseModel

DEFAULT_TABLE: Final = "bench_effects"
KEYS: Final = 300  # "a few hundred keys"
RECORD_BYTES: Final = 200

# Environment of the benchmark's consumer subprocesses (not ONCEFLOW_*: the
# engine's settings own that prefix).
ENV_TOPIC: Final = "OFBENCH_TOPIC"
ENV_GROUP: Final = "OFBENCH_GROUP"
ENV_TABLE: Final = "OFBENCH_TABLE"


class BenchRecord(BaseModel):
    """One record's value, JSON, about RECORD_BYTES long."""

    id: int
    key: str
    amount: int
    note: str


def key_of(i: int) -> str:
    return f"key-{(i * 7919) % KEYS:03d}"


_NOTE_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def _note(length: int) -> str:
    return "".join(_NOTE_ALPHABET[(i * 7) % len(_NOTE_ALPHABET)] for i in range(length))


# Sized once so that a typical record (6-digit id) is RECORD_BYTES of JSON.
_BASE = len(orjson.dumps({"id": 100000, "key": key_of(1), "amount": 1000, "note": ""}))
_NOTE = _note(max(0, RECORD_BYTES - _BASE))


def record_value(i: int) -> bytes:
    """The JSON value of record number `i` (its `id`)."""
    return orjson.dumps({"id": i, "key": key_of(i), "amount": 1000 + i % 9000, "note": _NOTE})


def step_a(record: BenchRecord) -> int:
    """Trivial compute: a checksum of the record."""
    return zlib.crc32(record.note.encode(), record.amount) ^ record.id


def step_b(value: int) -> int:
    """Trivial compute on step_a's result."""
    return (value * 2654435761) % 1_000_003


def create_effects_table(table: str = DEFAULT_TABLE) -> sql.Composed:
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} ("
        " event_id bigint NOT NULL,"
        " part integer NOT NULL,"
        " off bigint NOT NULL,"
        " produced_ms bigint,"
        " score bigint NOT NULL,"
        " done_at timestamptz NOT NULL DEFAULT clock_timestamp())"
    ).format(sql.Identifier(table))


def insert_effect(table: str = DEFAULT_TABLE) -> bytes:
    """One row: (event_id, part, off, produced_ms, score). Rendered once: a
    `Composed` would be rendered again by every execute, on the hot path."""
    return (
        sql.SQL(
            "INSERT INTO {} (event_id, part, off, produced_ms, score) VALUES (%s, %s, %s, %s, %s)"
        )
        .format(sql.Identifier(table))
        .as_bytes()
    )


def insert_effects(table: str = DEFAULT_TABLE) -> bytes:
    """Many rows in one statement, as five arrays."""
    return (
        sql.SQL(
            "INSERT INTO {} (event_id, part, off, produced_ms, score)"
            " SELECT * FROM unnest(%s::bigint[], %s::int[], %s::bigint[], %s::bigint[],"
            " %s::bigint[])"
        )
        .format(sql.Identifier(table))
        .as_bytes()
    )
