"""This executor's heartbeat, and what it does every half lease: end the
transactions that dead executors left open, and recover their work."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from ._config import EngineSettings
from ._db import Database
from ._errors import OnceflowError
from ._sql import Queries

log = logging.getLogger("onceflow.engine")


class Heartbeat:
    def __init__(
        self, db: Database, queries: Queries, settings: EngineSettings, recover: Callable[[], int]
    ) -> None:
        self._db = db
        self._q = queries
        self._settings = settings
        self._recover = recover
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned_end = False

    def beat(self) -> None:
        self._db.execute(
            self._q["heartbeat"],
            {
                "executor_id": self._settings.executor_id,
                "hostname": socket.gethostname(),
                "pid": os.getpid(),
            },
        )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="onceflow-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _loop(self) -> None:
        settings = self._settings
        recover_every = max(settings.heartbeat, settings.lease / 2)
        last_recovery = time.monotonic()
        while not self._stop.wait(settings.heartbeat):
            try:
                self.beat()
                if time.monotonic() - last_recovery >= recover_every:
                    last_recovery = time.monotonic()
                    self._end_dead_transactions()
                    self._recover()
            except OnceflowError as exc:
                log.warning("heartbeat failed: %s", exc)
            except Exception:
                # Never let a bug end the heartbeat: this executor would look
                # dead and its work would be taken while it still runs it.
                log.exception("heartbeat or recovery failed")

    def _end_dead_transactions(self) -> None:
        """End the transactions that executors past their lease left open on
        their tagged connections (Database.connect): their row locks would keep
        the workflows they hold from being claimed (claims skip locked rows).
        A zombie that wakes finds its connection gone and is refused."""
        try:
            ended = self._db.fetch_all(
                self._q["end_dead_transactions"], {"lease": self._settings.lease}
            )
        except OnceflowError as exc:
            if not self._warned_end:
                self._warned_end = True
                log.warning(
                    "cannot end the open transactions of dead executors (%s); their "
                    "workflows wait until those end by themselves. The database role "
                    "needs to be the same for every executor, or granted pg_signal_backend",
                    exc,
                )
            return
        for row in ended:
            if row["ended"]:
                log.warning(
                    "ended a transaction that executor %s left open (silent for %.1fs; lease %ss)",
                    row["owner"],
                    row["silent"],
                    self._settings.lease,
                )
