"""What a chaos run may be asked to do: `ChaosConfig`, the fault `KINDS`, `ChaosError`.

Shared by the run (`bench.chaos`), its faults (`bench.chaos_faults`) and the
consumer service it starts (`APP`, imported from `ROOT`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = "bench.chaos_app:app"
KINDS = ("kill", "zombie", "pg_restart", "kafka_restart", "storm")
Say = Callable[[str], None]


class ChaosError(RuntimeError):
    """The run could not be set up as asked; the message says what to change."""


@dataclass(frozen=True)
class ChaosConfig:
    """What to run. Times in seconds; `rate` in records a second."""

    records: int = 100_000
    partitions: int = 6
    keys: int = 300
    services: int = 3
    faults: int = 25
    kinds: tuple[str, ...] = KINDS
    rate: float = 300.0
    seed: int | None = None
    # Short lease: a zombie's work is taken over within the run.
    lease: float = 3.0
    heartbeat: float = 0.5
    # Kafka moves a frozen member's partitions after this; a zombie outlasts
    # it too, or its partitions (and so its queued work) would wait for it.
    session_timeout: float = 6.0
    # Kafka commits stored offsets this often (librdkafka's default is 5 s):
    # the shorter, the more running workflows a new owner finds in Postgres only.
    commit_interval: float = 1.0
    drain_timeout: float = 600.0
    work_seconds: float = 0.0  # how long the handler's `work` step takes
    execution: str = "auto"  # the subscription's `execution`
    log_dir: Path | None = None
    keep: bool = False
