"""Manage the native test services by hand: ``python -m consumers.testing.services up``.

``up`` prints shell ``export`` lines on stdout (progress goes to stderr), so
``eval "$(python -m consumers.testing.services up)"`` points the test suite at them.
The services keep running after the command exits; ``down`` stops them.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence

from consumers.testing._services import (
    ENV_DATABASE_URL,
    ENV_KAFKA,
    NativeKafka,
    NativePostgres,
    ServiceUnavailable,
    default_state_dir,
)

_COMMANDS = ("up", "down", "status", "restart-postgres", "restart-kafka")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the process exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m consumers.testing.services",
        description=f"Native Postgres and Kafka for Onceflow's tests, kept in {default_state_dir()}"
        " (set ONCEFLOW_SERVICES_DIR to move them).",
    )
    parser.add_argument("command", choices=_COMMANDS)
    command = parser.parse_args(argv).command
    postgres, kafka = NativePostgres(), NativeKafka()
    try:
        if command == "up":
            postgres.start()
            kafka.start()
            print(f"export {ENV_DATABASE_URL}={shlex.quote(postgres.url)}")
            print(f"export {ENV_KAFKA}={shlex.quote(kafka.bootstrap)}")
        elif command == "down":
            kafka.stop()
            postgres.stop()
        elif command == "restart-postgres":
            postgres.restart()
        elif command == "restart-kafka":
            kafka.restart()
        else:
            pg_state = "running" if postgres.is_running() else "stopped"
            kafka_state = f"running (pid {kafka.pid})" if kafka.is_running() else "stopped"
            print(f"postgres: {pg_state}  {_or_unset(lambda: postgres.url)}")
            print(f"kafka:    {kafka_state}  {_or_unset(lambda: kafka.bootstrap)}")
            print(f"state:    {default_state_dir()}")
    except ServiceUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _or_unset(address: Callable[[], str]) -> str:
    try:
        return address()
    except ServiceUnavailable:
        return "(never started)"


if __name__ == "__main__":
    sys.exit(main())
