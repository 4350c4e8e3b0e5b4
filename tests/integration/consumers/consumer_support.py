"""Helpers of the consumer tests: waiting with a deadline, feeding a topic, counting.

A module of its own (not conftest.py), so that test modules import it by a name
no other test directory uses.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psycopg
from apps.flow import orders
from confluent_kafka import Producer

from consumers import KafkaApp
from consumers.testing import Effects, ExactlyOnceCheck, Report

T = TypeVar("T")

# On the services' PYTHONPATH, so that they import `apps.service`.
APPS_ROOT = Path(__file__).resolve().parent
# Short lease and heartbeat: a killed executor's work is taken over in seconds.
LEASE = 3.0
HEARTBEAT = 0.5

EFFECTS = Effects("public.effects", key_column="key", seq_column="seq", order_column="id")


def wait_until(check: Callable[[], T], *, timeout: float, what: str, pause: float = 0.05) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(pause)


def wait_complete(check: ExactlyOnceCheck, app: KafkaApp, *, timeout: float) -> Report:
    """`check.wait_until_complete`, failing at once if the in-process app stopped on an error."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check.wait_until_complete(
                timeout=min(2.0, max(0.0, deadline - time.monotonic()))
            )
        except AssertionError:
            # KafkaApp has no public health check: its group threads log and keep
            # the error in _errors (see the report to the code's owners).
            if app._errors:
                raise AssertionError(f"the app stopped on {app._errors[0]!r}") from None
            if time.monotonic() >= deadline:
                raise


class Feeder:
    """Produces `rate` records a second, over `keys` keys, until stopped."""

    def __init__(self, bootstrap: str, topic: str, *, rate: int = 100, keys: int = 30) -> None:
        self.bootstrap, self.topic, self.rate, self.keys = bootstrap, topic, rate, keys
        self.sent = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(60)
        if self.error is not None:
            raise self.error
        return self.sent

    def _run(self) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5})
        chunk = max(1, self.rate // 10)
        try:
            while not self._stop.wait(0.1):
                for key, value in orders(chunk, keys=self.keys, start=self.sent):
                    producer.produce(self.topic, value, key)
                if producer.flush(30):
                    raise AssertionError("the feeder could not deliver its records")
                self.sent += chunk
        except BaseException as exc:
            self.error = exc


def succeeded(database_url: str) -> int:
    """How many workflows are in SUCCESS."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM onceflow.workflows WHERE status = 'SUCCESS'"
        ).fetchone()
    return int(row[0]) if row else 0
