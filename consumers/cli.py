"""The `onceflow` command: run a consumer service, apply migrations."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from engine import OnceflowError, migrate_database

from ._app import KafkaApp


def load_app(spec: str) -> KafkaApp:
    """Import `module:attribute` and return the KafkaApp it names."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise OnceflowError(
            f"expected MODULE:APP (for example examples.orders.app:app), got {spec!r}"
        )
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise OnceflowError(f"cannot import {module_name!r}: {exc}") from exc
    app = getattr(module, attr, None)
    if not isinstance(app, KafkaApp):
        raise OnceflowError(f"{spec} is {type(app).__name__}, not a KafkaApp")
    return app


def _run(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    if args.no_migrate:
        app.engine._migrate = False
    if args.stop_timeout is not None:
        app.stop_timeout = args.stop_timeout
    for sub in app.subscriptions:
        logging.getLogger("onceflow").info(
            "subscription %s: topics %s, group %s, ordering %s, max_in_flight %d",
            sub.name,
            ",".join(sub.topics),
            sub.group,
            sub.ordering,
            sub.max_in_flight,
        )
    app.run(progress_every=args.progress_every)
    return 0


def _migrate(args: argparse.Namespace) -> int:
    applied = migrate_database(args.database_url, schema=args.schema)
    if applied:
        print("applied migrations " + ", ".join(f"{v:04d}" for v in applied))
    else:
        print("schema is up to date")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onceflow", description=__doc__)
    parser.add_argument("--log-level", default=os.environ.get("ONCEFLOW_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the consumer service of a KafkaApp")
    run.add_argument("app", help="MODULE:APP, the KafkaApp to run")
    run.add_argument(
        "--no-migrate",
        action="store_true",
        help="refuse to start on an unmigrated schema instead of migrating it",
    )
    run.add_argument(
        "--stop-timeout",
        type=float,
        default=None,
        help="seconds running workflows get on SIGTERM (default 10)",
    )
    run.add_argument(
        "--progress-every",
        type=float,
        default=10.0,
        help="seconds between progress lines (0: none)",
    )
    run.set_defaults(func=_run)

    mig = sub.add_parser("migrate", help="apply pending schema migrations")
    mig.add_argument("--database-url", default=None, help="default: ONCEFLOW_DATABASE_URL")
    mig.add_argument("--schema", default=None, help="default: onceflow")
    mig.set_defaults(func=_migrate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args)
    except OnceflowError as exc:
        print(f"onceflow: error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
