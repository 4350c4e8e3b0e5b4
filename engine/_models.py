"""Plain records the engine hands out and takes in."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    PENDING = "PENDING"
    SUCCESS = "SUCCESS"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self is not Status.PENDING


# Source, NewWorkflow, Claimed and Recorded are built for every record on the
# consumer's hot path: plain slotted dataclasses, since a frozen one's
# __init__ (a guarded setattr per field) costs four times as much. Treat them
# as values all the same: nothing here changes one after it is built.
@dataclass(slots=True)
class Source:
    """Where a workflow's input came from (a Kafka record, for the consumers).

    The engine stores it and uses `group`, `topic` and `partition` only to leave
    recovery of such workflows to the integration that owns the source.
    """

    group: str
    topic: str
    partition: int
    offset: int
    ordering_key: str | None = None


@dataclass(slots=True)
class NewWorkflow:
    """One workflow to record in a batch (see Engine.record).

    `failure` records the workflow directly as ERROR with that error (input
    that could not be decoded is parked, never dropped).
    """

    workflow_id: str
    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    source: Source | None = None
    failure: dict[str, str] | None = None


class Disposition(StrEnum):
    """What recording found for one workflow of a batch."""

    NEW = "new"  # inserted now, owned by this executor: run it (if not recorded as failed)
    CLAIMED = "claimed"  # existed PENDING without a live owner; now ours: run it
    FINISHED = "finished"  # already final (or recorded as ERROR on input): nothing to do
    BUSY = "busy"  # PENDING under another live executor: leave it
    COMPLETED = "completed"  # inserted now and run to completion inline: done


@dataclass(slots=True)
class Claimed:
    """A workflow this executor owns at `epoch` and may run."""

    workflow_id: str
    name: str
    epoch: int
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    source_offset: int | None = None


@dataclass(slots=True)
class Recorded:
    """One workflow of a recorded batch. When `claimed` is set, this executor
    owns it and should run it (`Engine.run(claimed, fresh=fresh)`)."""

    workflow_id: str
    disposition: Disposition
    claimed: Claimed | None = None
    fresh: bool = False


@dataclass(frozen=True)
class WorkflowStatus:
    """A workflow as recorded. `input` is None for one that ran inline while
    the engine kept no inline inputs (its `source` says where its record is)."""

    workflow_id: str
    name: str
    status: Status
    input: Any
    output: Any
    error: dict[str, str] | None
    owner: str | None
    epoch: int
    attempts: int
    created_at: datetime
    updated_at: datetime
    source: Source | None


@dataclass(frozen=True)
class StepRecord:
    step: int
    name: str
    output: Any
    error: dict[str, str] | None
    started_at: datetime | None
    finished_at: datetime
