"""Forward-only schema migrations: migrations/NNNN_description.sql.

Applied in order under a Postgres advisory lock (so concurrent launches are
safe), each in its own transaction, recorded with a checksum; an applied
file whose checksum changed is refused loudly (STYLE.md, Migrations).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import psycopg
from psycopg import sql

from ._db import Database
from ._errors import MigrationError, SchemaNotMigratedError

log = logging.getLogger("onceflow.migrate")

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any constant works; it only has to be the same for every Onceflow process.
_LOCK_KEY = 0x0F1CE_F10


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def migrations_dir() -> Path:
    """Where the migration files are: inside an installed wheel, else the repository."""
    packaged = Path(__file__).parent / "_migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "migrations"


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """Read and check the migration files: numbered from 1 with no gap or repeat."""
    directory = directory or migrations_dir()
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} not found; reinstall onceflow")
    found: list[Migration] = []
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql":
            continue
        match = _FILE.match(path.name)
        if not match:
            raise MigrationError(
                f"migration file {path.name} is misnamed; use NNNN_description.sql "
                "(four digits, lowercase words joined by underscores)"
            )
        found.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(
                f"migration {migration.version:04d} found where {expected:04d} was expected; "
                "versions must run 0001, 0002, … with no gap or repeat",
                version=migration.version,
            )
    return found


def migrate(db: Database, schema: str) -> list[int]:
    """Apply every pending migration; return the versions applied (empty if none)."""
    migrations = load_migrations()
    applied_now: list[int] = []
    conn = db.connect(autocommit=True)
    try:
        # Session lock: held across all the migrations' transactions, so a
        # second process waits and then finds nothing left to do.
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            _ensure_bookkeeping(conn, schema)
            applied = _applied(conn, schema)
            _check_checksums(migrations, applied)
            for migration in migrations:
                if migration.version in applied:
                    continue
                _apply(conn, schema, migration)
                applied_now.append(migration.version)
                log.info("applied migration %04d_%s", migration.version, migration.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    except psycopg.Error as exc:
        raise MigrationError(f"migration failed: {exc}") from exc
    finally:
        conn.close()
    return applied_now


def check_migrated(db: Database, schema: str) -> None:
    """Refuse to run on a schema that lacks any of the code's migrations."""
    migrations = load_migrations()
    conn = db.connect(autocommit=True)
    try:
        exists = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL AS ok", (f"{schema}.schema_migrations",)
        ).fetchone()
        applied = _applied(conn, schema) if exists and exists["ok"] else {}
    finally:
        conn.close()
    missing = [m for m in migrations if m.version not in applied]
    if missing:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in missing)
        raise SchemaNotMigratedError(
            f"schema {schema!r} lacks migrations {names}: run `onceflow migrate` "
            "or launch with migrate=True"
        )
    _check_checksums(migrations, applied)


def _ensure_bookkeeping(conn: psycopg.Connection[dict[str, object]], schema: str) -> None:
    ident = sql.Identifier(schema)
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {}.schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        ).format(ident)
    )


def _applied(conn: psycopg.Connection[dict[str, object]], schema: str) -> dict[int, str]:
    rows = conn.execute(
        sql.SQL("SELECT version, checksum FROM {}.schema_migrations").format(sql.Identifier(schema))
    ).fetchall()
    return {cast(int, r["version"]): cast(str, r["checksum"]) for r in rows}


def _check_checksums(migrations: list[Migration], applied: dict[int, str]) -> None:
    for migration in migrations:
        recorded = applied.get(migration.version)
        if recorded is not None and recorded != migration.checksum:
            raise MigrationError(
                f"migration {migration.version:04d}_{migration.name} was edited after it was "
                "applied (checksum differs); migrations are forward-only: restore the file "
                "and add a new migration instead",
                version=migration.version,
            )


def _apply(conn: psycopg.Connection[dict[str, object]], schema: str, migration: Migration) -> None:
    ident = sql.Identifier(schema)
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(ident))
        conn.execute(sql.SQL(migration.text))
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)"
            ).format(ident),
            (migration.version, migration.name, migration.checksum),
        )


def migrate_database(database_url: str | None = None, *, schema: str | None = None) -> list[int]:
    """Apply pending migrations to a database (what `onceflow migrate` runs).

    Returns the versions applied now; empty when the schema was up to date.
    """
    from ._config import build_settings

    settings = build_settings(database_url=database_url, schema_name=schema)
    db = Database(settings.url(), pool_size=1)
    return migrate(db, settings.schema_name)
