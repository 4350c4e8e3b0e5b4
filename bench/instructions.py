"""Instructions per event of the inline path: a figure that holds still.

    python -m bench.instructions                 # this tree
    python -m bench.instructions --source DIR    # another checkout, to compare

Runs `bench/inline_micro.py` under valgrind's callgrind twice, with SMALL and
LARGE records, and prints (instructions of the large run - the small run's) /
(LARGE - SMALL): what one more event costs the consumer process, start-up and
warm-up cancelled out. Callgrind counts instructions, not seconds, so the
figure repeats to within a few hundred instructions whatever else the machine
is doing (this machine's speed swings by a third from run to run, which hides
a 2% change in any timing). It leaves out Postgres (another process) and
Kafka (inline_micro feeds records from memory), and says nothing of waiting:
compare changes with it, then confirm with `bench.throughput`.
Needs valgrind; takes about a minute per tree. Figures are printed, never
asserted (DESIGN.md §8).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMALL = 2_500
LARGE = 12_500
BATCH = 500


def instructions(source: Path, records: int) -> int:
    """Instructions callgrind counted for one inline_micro run of `records`."""
    env = {
        **os.environ,
        "PYTHONHASHSEED": "0",  # the same sets and dicts, run after run
        "PYTHONPATH": os.pathsep.join([str(source), str(ROOT)]),
    }
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={tmp}/out",
            sys.executable,
            str(source / "bench" / "inline_micro.py"),
            "-n",
            str(records),
            "--batch",
            str(BATCH),
        ]
        done = subprocess.run(cmd, cwd=source, env=env, capture_output=True, text=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"inline_micro under callgrind failed:\n{done.stdout}\n{done.stderr}")
    return int(found.group(1))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.instructions", description=__doc__.splitlines()[0]
    )
    p.add_argument("--source", type=Path, default=ROOT, help="the checkout to measure")
    args = p.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    source = args.source.resolve()
    print(f"instructions: {source}, inline_micro with {SMALL:,} and {LARGE:,} records", flush=True)
    small = instructions(source, SMALL)
    large = instructions(source, LARGE)
    per_event = (large - small) / (LARGE - SMALL)
    print(f"instructions per event: {per_event:,.0f} (runs: {small:,} and {large:,})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
