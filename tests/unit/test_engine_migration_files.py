"""Migration file rules: NNNN_description.sql, numbered from 1 with no gap."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import MigrationError
from engine._migrate import load_migrations


def write(directory: Path, *names: str) -> Path:
    for name in names:
        (directory / name).write_text(f"-- {name}\nSELECT 1;\n")
    return directory


def test_shipped_migrations_follow_the_rules() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert migrations[0].name == "initial"


def test_files_load_in_order_with_checksums(tmp_path: Path) -> None:
    loaded = load_migrations(write(tmp_path, "0002_more.sql", "0001_first.sql", "README.md"))
    assert [(m.version, m.name) for m in loaded] == [(1, "first"), (2, "more")]
    assert loaded[0].checksum != loaded[1].checksum


@pytest.mark.parametrize(
    ("names", "says"),
    [
        (["0001_first.sql", "0003_gap.sql"], "0003 found where 0002 was expected"),
        (["0001_first.sql", "0001_again.sql"], "found where 0002 was expected"),
        (["1_short.sql"], "misnamed"),
        (["0001_Upper-Case.sql"], "misnamed"),
    ],
)
def test_bad_files_are_refused(tmp_path: Path, names: list[str], says: str) -> None:
    with pytest.raises(MigrationError, match=says):
        load_migrations(write(tmp_path, *names))


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="not found"):
        load_migrations(tmp_path / "nowhere")
