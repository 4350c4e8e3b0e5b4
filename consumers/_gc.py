"""The consumer service's garbage-collector settings.

A consumer allocates a burst of short-lived containers for every poll
(records, their workflow rows, the handlers' values) and keeps a poll's worth
alive until its commit. With CPython's defaults (a young collection every 700
net allocations) that burst sets off a young collection every few records and
an older one every few dozen, each walking every object still alive; and now
and then a full collection walks everything the service imported as well
(24-39 ms here, a stall of the consumer thread). Measured on the benchmark's
handler, collections cost 15-18 µs per event (bench/README.md).

So the service, once started, moves what it built at startup out of the
collector's sight (`gc.freeze`: modules, pydantic schemas, the engine) and
collects young objects every `threshold` net allocations instead. Reference
counting still frees nearly everything at once; only cycles wait longer.
"""

from __future__ import annotations

import gc
import logging
import os

from engine import ConfigurationError

log = logging.getLogger("onceflow.consumers")

# Net allocations between young collections (CPython's default: 700).
DEFAULT_THRESHOLD = 50_000
ENV_THRESHOLD = "ONCEFLOW_GC_THRESHOLD"


def tune_for_service(threshold: int | None = None) -> None:
    """Freeze what exists now and space young collections `threshold` apart
    (default: $ONCEFLOW_GC_THRESHOLD, else DEFAULT_THRESHOLD; 0 leaves the
    collector as it is)."""
    if threshold is None:
        raw = os.environ.get(ENV_THRESHOLD) or str(DEFAULT_THRESHOLD)
        try:
            threshold = int(raw)
        except ValueError:
            raise ConfigurationError(
                f"{ENV_THRESHOLD}={raw!r}: expected a whole number of allocations (0: off)"
            ) from None
    if threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(threshold, older, oldest)
    log.debug("gc: %d objects frozen, young collections every %d", gc.get_freeze_count(), threshold)
