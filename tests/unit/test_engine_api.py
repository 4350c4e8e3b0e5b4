"""The engine's public surface, pinned, and the direction of imports (STYLE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import engine

ENGINE_DIR = Path(engine.__file__).resolve().parent

PUBLIC = [
    "Claimed",
    "ConfigurationError",
    "DatabaseUnavailableError",
    "Disposition",
    "Engine",
    "InlinePolicy",
    "Lookup",
    "MigrationError",
    "NewWorkflow",
    "NonDeterministicWorkflowError",
    "OnceflowError",
    "PendingRecord",
    "Recorded",
    "SchemaNotMigratedError",
    "SerializationError",
    "Source",
    "Status",
    "StepError",
    "StepRecord",
    "UnknownWorkflowError",
    "Workflow",
    "WorkflowCancelledError",
    "WorkflowConflictError",
    "WorkflowFailedError",
    "WorkflowFencedError",
    "WorkflowHandle",
    "WorkflowNotFoundError",
    "WorkflowStatus",
    "current_workflow_id",
    "migrate_database",
    "step_idempotency_key",
]


def test_public_names_are_pinned() -> None:
    assert engine.__all__ == PUBLIC
    for name in PUBLIC:
        assert getattr(engine, name) is not None


def test_every_error_is_an_onceflow_error() -> None:
    errors = [getattr(engine, n) for n in PUBLIC if n.endswith("Error")]
    assert all(issubclass(e, engine.OnceflowError) for e in errors)


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def test_engine_never_imports_consumers() -> None:
    sources = sorted(ENGINE_DIR.rglob("*.py"))
    assert len(sources) > 5  # the package was found
    offenders = {
        str(path.relative_to(ENGINE_DIR)): sorted(
            m for m in imported_modules(path) if m == "consumers" or m.startswith("consumers.")
        )
        for path in sources
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_import_checker_sees_both_import_forms(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import consumers\nfrom consumers._app import KafkaApp\nfrom . import _db\n")
    assert imported_modules(sample) == {"consumers", "consumers._app"}
