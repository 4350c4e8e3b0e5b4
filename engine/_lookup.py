"""Asking which of a batch's workflows exist, before the batch is sent.

An inline batch runs only its workflows not recorded yet, so it first asks
Postgres which of its IDs exist. Asked on the batch's own connection, the
question waits behind the previous batch's COMMIT, and the consumer thread
waits for the answer. A consumer can ask earlier instead, on a connection of
its own and without waiting (`send_lookup`), while the previous batch
commits; the batch then reads the answer (`Lookup.rows`), usually there by
then.

Asking outside the batch's transaction changes nothing for exactly-once. The
check that counts is the batch's insert of its finished rows, with no ON
CONFLICT, in its own transaction (_inline.py): the lookup only spares
running again what is recorded already, and a row recorded after the lookup
(by another executor) fails that insert, as it always did.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import orjson
import psycopg

from ._models import NewWorkflow

# (workflow_id, final) for each of a batch's IDs that is recorded.
Found = list[tuple[str, bool]]


def lookup_params(ids: list[str]) -> dict[str, str]:
    """existing_workflows's parameters: the IDs as one JSON array."""
    return {"workflow_ids": orjson.dumps(ids).decode()}


class Lookup:
    """The question sent for one batch; `rows()` reads its answer, once.

    `ask`: the workflows to ask about, if not all of the batch; the others
    are taken as not recorded, with no question sent for them when it is
    empty. Taking a recorded one for unrecorded costs a fall-back, never
    correctness: its inline run's insert fails, as above."""

    def __init__(
        self, batch: Sequence[NewWorkflow], ask: Sequence[NewWorkflow] | None = None
    ) -> None:
        self.ids = [item.workflow_id for item in batch]
        self.asked = self.ids if ask is None else [item.workflow_id for item in ask]
        self._conn: psycopg.Connection[Any] | None = None
        self._pipeline = contextlib.ExitStack()
        self._cursor: psycopg.Cursor[Any] | None = None
        self._found: Found | None = None if self.asked else []

    def send(self, conn: psycopg.Connection[Any], query: Any) -> None:
        """Send the question on `conn` (in pipeline mode until answered)."""
        self._conn = conn
        self._pipeline.enter_context(conn.pipeline())
        self._cursor = conn.execute(query, lookup_params(self.asked))
        # Postgres keeps a pipeline's answers until asked for them: ask now,
        # so that the answer comes as soon as it is ready.
        conn.pgconn.send_flush_request()
        conn.pgconn.flush()

    def answers(self, batch: Sequence[NewWorkflow]) -> bool:
        """Whether this is the question for `batch` (the same IDs)."""
        return len(batch) == len(self.ids) and all(
            item.workflow_id == wid for item, wid in zip(batch, self.ids, strict=True)
        )

    def rows(self) -> Found | None:
        """The answer (read once, then kept), or None if Postgres gave none
        (the batch then asks on its own connection, which reports the
        error). Reading it frees the connection for the next lookup."""
        cursor, self._cursor = self._cursor, None
        if cursor is None:
            return self._found
        try:
            self._found = cursor.fetchall()
            self._pipeline.close()
        except psycopg.Error:
            with contextlib.suppress(psycopg.Error):
                self._pipeline.close()
            if self._conn is not None:
                self._conn.close()  # in an unknown state: the next lookup opens another
        return self._found
