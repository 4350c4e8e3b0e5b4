"""What workflow threads hand the checkpoint writer (_writer.py): step
checkpoints, transaction steps and completions, each with the future its
thread waits on; and what a transaction step came to."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

import psycopg

TxFunction = Callable[[psycopg.Connection[Any]], Any]


class TxVerdict(Enum):
    COMMITTED = "committed"
    FAILED = "failed"  # the user's SQL or code raised; rolled back to its savepoint
    REFUSED = "refused"  # checkpoint matched no live row at our epoch: fenced or done before


@dataclass(frozen=True)
class TxResult:
    verdict: TxVerdict
    value: Any = None
    error: BaseException | None = None


@dataclass
class Job:
    workflow_id: str
    epoch: int
    future: Future[Any] = field(default_factory=Future)


@dataclass
class StepJob(Job):
    step: int = 0
    name: str = ""
    output: str | None = None
    error: str | None = None
    started_at: datetime | None = None


@dataclass
class TxJob(Job):
    step: int = 0
    name: str = ""
    fn: TxFunction | None = None
    started_at: datetime | None = None


@dataclass
class CompleteJob(Job):
    status: str = ""
    output: str | None = None
    error: str | None = None
