"""Onceflow's exceptions: one root, typed attributes, messages that say what to do."""

from __future__ import annotations


class OnceflowError(Exception):
    """Root of every error Onceflow raises on purpose."""


class ConfigurationError(OnceflowError):
    """A setting is missing or wrong; the message names the setting."""


class DatabaseUnavailableError(OnceflowError):
    """Postgres could not be reached (wrong URL, server down, missing database)."""


class SchemaNotMigratedError(OnceflowError):
    """The Onceflow schema is missing or behind the code's migrations."""


class MigrationError(OnceflowError):
    """A migration could not be applied, or an applied one was edited."""

    def __init__(self, message: str, *, version: int | None = None) -> None:
        super().__init__(message)
        self.version = version


class SerializationError(OnceflowError):
    """A workflow or step argument or result cannot be stored as JSON."""


class WorkflowNotFoundError(OnceflowError):
    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"no workflow with ID {workflow_id!r}")
        self.workflow_id = workflow_id


class WorkflowConflictError(OnceflowError):
    """The workflow ID is taken by a workflow of another name."""

    def __init__(self, workflow_id: str, existing_name: str, requested_name: str) -> None:
        super().__init__(
            f"workflow ID {workflow_id!r} already belongs to workflow {existing_name!r}, "
            f"not {requested_name!r}; pick another ID or start {existing_name!r}"
        )
        self.workflow_id = workflow_id
        self.existing_name = existing_name
        self.requested_name = requested_name


class UnknownWorkflowError(OnceflowError):
    """A recorded workflow names a function this process has not registered."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"no workflow named {name!r} is registered in this process; import the module "
            "that defines it before launch()"
        )
        self.name = name


class NonDeterministicWorkflowError(OnceflowError):
    """A replay called a different step than the one recorded at that position."""

    def __init__(self, workflow_id: str, step: int, expected: str, found: str) -> None:
        super().__init__(
            f"workflow {workflow_id!r} is not deterministic: step {step} was recorded as "
            f"{expected!r} but the replay called {found!r}; a workflow must call the same "
            "steps in the same order every time it runs"
        )
        self.workflow_id = workflow_id
        self.step = step
        self.expected = expected
        self.found = found


class WorkflowFencedError(OnceflowError):
    """This executor lost the workflow to another one (its lease ran out).

    Raised inside a workflow whose checkpoint was refused; the workflow stops
    here and the executor that claimed it carries it on.
    """

    def __init__(self, workflow_id: str, epoch: int) -> None:
        super().__init__(
            f"workflow {workflow_id!r} at epoch {epoch} was claimed by another executor; "
            "this executor's results for it are discarded"
        )
        self.workflow_id = workflow_id
        self.epoch = epoch


class WorkflowFailedError(OnceflowError):
    """The workflow ended in ERROR; `error` holds the recorded type, message, traceback."""

    def __init__(self, workflow_id: str, error: dict[str, str]) -> None:
        super().__init__(
            f"workflow {workflow_id!r} failed: {error.get('type')}: {error.get('message')}"
        )
        self.workflow_id = workflow_id
        self.error = error


class WorkflowCancelledError(OnceflowError):
    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"workflow {workflow_id!r} was cancelled")
        self.workflow_id = workflow_id


class StepError(OnceflowError):
    """A recorded step failure replayed: the step ran out of retries earlier."""

    def __init__(self, step_name: str, error: dict[str, str]) -> None:
        super().__init__(f"step {step_name!r} failed: {error.get('type')}: {error.get('message')}")
        self.step_name = step_name
        self.error = error
