"""A small Onceflow executor the engine tests run, stop and kill as a subprocess.

    python run_engine.py URL --workflow NAME --id ID [--id ID …] [--arg JSON …]

Launches an engine, starts the given workflows (idempotently, under their IDs),
waits for them and prints one JSON object {workflow_id: result or error} on
stdout. `--migrate` only migrates and prints the versions applied.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[3]), str(HERE.parent)]  # the checkout, engine_flows

import engine_flows  # noqa: E402

import engine  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--migrate", action="store_true")
    parser.add_argument("--workflow")
    parser.add_argument("--id", action="append", default=[], dest="ids")
    parser.add_argument("--arg", action="append", default=[], dest="args", type=json.loads)
    parser.add_argument("--executor-id")
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--heartbeat", type=float, default=0.3)
    parser.add_argument("--wait-for", type=Path, help="begin once this file exists")
    parser.add_argument("--report", type=Path, help="append 'ID STATUS' when a local run ends")
    ns = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if ns.migrate:
        wait_for(ns.wait_for)
        print(json.dumps(engine.migrate_database(ns.url)))
        return 0

    eng = engine.Engine(ns.url, executor_id=ns.executor_id, lease=ns.lease, heartbeat=ns.heartbeat)
    flows = engine_flows.register(eng)
    eng.launch()
    try:
        wait_for(ns.wait_for)
        handles = [eng.start(getattr(flows, ns.workflow), *ns.args, workflow_id=i) for i in ns.ids]
        if ns.report is not None:
            report = ns.report
            for handle in handles:
                handle.add_done_callback(
                    lambda h, status: engine_flows.append_line(report, f"{h.workflow_id} {status}")
                )
        results: dict[str, object] = {}
        for handle in handles:
            try:
                results[handle.workflow_id] = {"output": handle.result(timeout=120)}
            except engine.OnceflowError as exc:
                results[handle.workflow_id] = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(results), flush=True)
    finally:
        eng.shutdown()
    return 0


def wait_for(path: Path | None) -> None:
    """Wait until `path` exists: lets a test release several processes at once."""
    while path is not None and not path.exists():
        time.sleep(0.002)


if __name__ == "__main__":
    sys.exit(main())
