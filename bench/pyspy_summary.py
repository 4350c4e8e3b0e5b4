"""Summarise a py-spy raw profile (folded stacks) of the Onceflow service.

    py-spy record --gil -p PID -d 20 -f raw -o out.txt
    python -m bench.pyspy_summary out.txt [--top 25]

Prints the share of samples per thread role (consumer loop, workers,
checkpoint writers, ...), the functions with the most samples *on top of the
stack* (self), and those *anywhere on the stack* (inclusive). With `--gil`
the samples are of the thread holding the GIL: what the process's one core
of Python spends its time on.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

ROLES = (
    ("CheckpointWriter._loop", "checkpoint writer"),
    ("WorkerPool._work", "workflow workers"),
    ("GroupConsumer.run", "consumer loop"),
    ("Engine._heartbeat_loop", "heartbeat"),
    ("KafkaApp.run", "main thread"),
)


def parse(path: Path) -> list[tuple[list[str], int]]:
    stacks: list[tuple[list[str], int]] = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def _function(frame: str) -> str:
    # "Class.method (path/file.py:123)" -> "Class.method (path/file.py)"
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def role(stack: list[str]) -> str:
    joined = ";".join(stack)
    for marker, name in ROLES:
        if marker in joined:
            return name
    return "other"


def summarize(stacks: list[tuple[list[str], int]], top: int) -> str:
    total = sum(n for _, n in stacks)
    if not total:
        return "no samples"
    roles: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for stack, n in stacks:
        roles[role(stack)] += n
        own[_function(stack[-1])] += n
        for fn in {_function(f) for f in stack}:
            inclusive[fn] += n
    lines = [f"{total:,} samples"]
    lines.append("by thread role:")
    lines += [f"  {n / total:6.1%}  {name}" for name, n in roles.most_common()]
    lines.append(f"top {top} by self samples:")
    lines += [f"  {n / total:6.1%}  {fn}" for fn, n in own.most_common(top)]
    lines.append(f"top {top} by inclusive samples:")
    lines += [f"  {n / total:6.1%}  {fn}" for fn, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pyspy_summary")
    parser.add_argument("raw", type=Path, help="py-spy record -f raw output")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    print(summarize(parse(args.raw), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
