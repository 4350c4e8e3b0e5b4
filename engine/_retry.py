"""Retry policy for steps: exponential backoff with jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ._errors import ConfigurationError


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 0
    backoff: float = 2.0
    initial_delay: float = 0.1
    max_delay: float = 30.0

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ConfigurationError(f"retries must be 0 or more, got {self.retries}")
        if self.backoff < 1.0:
            raise ConfigurationError(f"backoff must be at least 1.0, got {self.backoff}")
        if self.initial_delay < 0 or self.max_delay < 0:
            raise ConfigurationError("initial_delay and max_delay must not be negative")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number `attempt` (1-based).

        "Equal jitter": half the exponential delay is kept, half is random, so
        retries of many workflows that failed together spread out but never
        come back at once.
        """
        base = min(self.max_delay, self.initial_delay * self.backoff ** (attempt - 1))
        return base / 2 + random.uniform(0, base / 2)
