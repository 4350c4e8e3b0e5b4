"""Onceflow's engine: durable workflows checkpointed in Postgres.

Knows nothing of Kafka; `consumers` builds on it (DESIGN.md §2).
"""

from ._context import current_workflow_id, step_idempotency_key
from ._engine import Engine
from ._errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    MigrationError,
    NonDeterministicWorkflowError,
    OnceflowError,
    SchemaNotMigratedError,
    SerializationError,
    StepError,
    UnknownWorkflowError,
    WorkflowCancelledError,
    WorkflowConflictError,
    WorkflowFailedError,
    WorkflowFencedError,
    WorkflowNotFoundError,
)
from ._handle import WorkflowHandle
from ._inline import InlinePolicy
from ._lookup import Lookup
from ._migrate import migrate_database
from ._models import (
    Claimed,
    Disposition,
    NewWorkflow,
    Recorded,
    Source,
    Status,
    StepRecord,
    WorkflowStatus,
)
from ._registry import Workflow
from ._sources import PendingRecord

__all__ = [
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
