"""Test-only fault injection: kill this process at a named point of ingestion.

Set ONCEFLOW_FAULT to `POINT:N` (for example `after_record:3`) and the
process SIGKILLs itself the Nth time it reaches POINT. The crash tests use it
to die exactly between the Postgres commit and the offset commit
(DESIGN.md §9, the lesson of DBOS issue 733). Unset, it costs one dict lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

POINTS = ("before_record", "after_record")

_spec = os.environ.get("ONCEFLOW_FAULT", "")
_point, _, _count = _spec.partition(":")
_target = int(_count) if _count.isdigit() else 1
_seen: Counter[str] = Counter()


def reached(point: str) -> None:
    if point != _point:
        return
    _seen[point] += 1
    if _seen[point] >= _target:
        os.kill(os.getpid(), signal.SIGKILL)
