"""Recording and claiming the workflows a source feeds (for consumers).

SourceIntake does the work behind Engine.record, Engine.inspect,
Engine.claim_source and Engine.release: record a batch in one statement (or
run its fresh workflows inline while recording it), sort out the ones that
already existed, claim a source partition's PENDING work on assign, and hand
work back. The Engine keeps the public methods and their contracts.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Container, Sequence
from typing import TYPE_CHECKING, Any

import psycopg

from . import _inline
from ._db import translate
from ._errors import OnceflowError
from ._inline import InlineAbort, InlinePolicy
from ._lookup import Found, Lookup
from ._models import Claimed, Disposition, NewWorkflow, Recorded, Source, Status
from ._rows import batch_document, claimed_from_row
from ._serialize import revive

if TYPE_CHECKING:
    from ._engine import Engine

log = logging.getLogger("onceflow.engine")


class SourceIntake:
    """Records and claims workflows fed from a source, for one Engine."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._db = engine._db
        self._q = engine._q
        self.settings = engine.settings
        self.executor_id = engine.executor_id
        self._runner = engine._runner
        # Shared with the Engine, which closes them at shutdown.
        self._inline_conns = engine._inline_conns

    def record(
        self,
        batch: Sequence[NewWorkflow],
        *,
        holding: Container[str] = (),
        inline: InlinePolicy | None = None,
    ) -> list[Recorded]:
        """Engine.record: the contract is documented there."""
        return self.send(batch, holding=holding, inline=inline).result()

    def send(
        self,
        batch: Sequence[NewWorkflow],
        *,
        holding: Container[str] = (),
        inline: InlinePolicy | None = None,
        lookup: Lookup | None = None,
    ) -> PendingRecord:
        """Engine.send_record: the contract is documented there."""
        # Read out first, whatever comes next: its connection is then free.
        found = None if lookup is None else lookup.rows()
        if found is not None and lookup is not None and not lookup.answers(batch):
            found = None
        sent: SentInline | None = None
        if batch and inline is not None:
            try:
                sent = self.send_inline(batch, inline, found)
            except InlineAbort as exc:
                log.info("inline batch of %d falls back to ordinary runs: %s", len(batch), exc)
        pending = PendingRecord(self, batch, holding, sent)
        if sent is None:
            pending.result()  # nothing in flight: recorded the ordinary way now
        return pending

    def outcome(
        self, batch: Sequence[NewWorkflow], holding: Container[str], sent: SentInline | None
    ) -> list[Recorded]:
        """What became of `batch`: its inline attempt's answers if it was sent
        inline, else (or if that attempt failed) recorded the ordinary way."""
        if not batch:
            return []
        inserted: set[str] | None = None
        completed: set[str] = set()
        if sent is not None:
            try:
                inserted, completed = sent.finish()
            except InlineAbort as exc:
                log.info("inline batch of %d falls back to ordinary runs: %s", len(batch), exc)
        if len(completed) == len(batch):
            # The usual inline batch: every workflow ran to its end here.
            return [Recorded(item.workflow_id, Disposition.COMPLETED) for item in batch]
        if inserted is None:
            inserted = self.insert_batch(batch)
        outcome: dict[str, Recorded] = {}
        for item in batch:
            if item.workflow_id in completed:
                outcome[item.workflow_id] = Recorded(item.workflow_id, Disposition.COMPLETED)
            elif item.workflow_id in inserted:
                if item.failure is not None:  # recorded straight into ERROR: nothing to run
                    outcome[item.workflow_id] = Recorded(item.workflow_id, Disposition.NEW)
                else:
                    claimed = Claimed(
                        item.workflow_id,
                        item.name,
                        1,
                        item.args,
                        item.kwargs,
                        item.source.offset if item.source else None,
                    )
                    outcome[item.workflow_id] = Recorded(
                        item.workflow_id, Disposition.NEW, claimed, fresh=True
                    )
        existing = [i.workflow_id for i in batch if i.workflow_id not in inserted]
        if existing:
            outcome.update(self.inspect(existing, holding=holding))
        return [outcome[i.workflow_id] for i in batch]

    def send_inline(
        self, batch: Sequence[NewWorkflow], policy: InlinePolicy, found: Found | None = None
    ) -> SentInline:
        """Send `batch` inline up to its COMMIT; raises InlineAbort (rolled
        back) when a workflow raised. `found`: its lookup's answer, if asked."""
        conn = self._inline_connection()
        # Pipeline mode: the statements go out without waiting for each
        # answer; an error in one surfaces when the answers are read.
        pipeline = contextlib.ExitStack()
        try:
            pipeline.enter_context(conn.pipeline())
            sent = _inline.send_batch(self._engine, conn, batch, policy, self.insert_on, found)
        except BaseException as exc:
            with contextlib.suppress(psycopg.Error):
                pipeline.__exit__(type(exc), exc, exc.__traceback__)
            if isinstance(exc, psycopg.Error):
                raise self._inline_failed(conn, exc) from exc
            # A workflow raised (or worse) between the batch's BEGIN and
            # its COMMIT: nothing of it may stay.
            failed = self._inline_failed(conn, None)
            if not isinstance(failed, InlineAbort):
                raise failed from exc
            raise
        return SentInline(self, conn, pipeline, sent)

    def _inline_failed(self, conn: psycopg.Connection[Any], exc: psycopg.Error | None) -> Exception:
        """What a driver error (or, with None, a workflow's exception) during
        an inline batch becomes: Postgres gone (the batch waits and is
        recorded again), or a failed statement (the transaction is rolled
        back and the batch goes the ordinary way)."""
        if conn.closed or conn.broken:
            self._inline_conns.pop((threading.get_ident(), "inline"), None)
            conn.close()
            return translate(exc or psycopg.OperationalError("connection lost"), self._db.url)
        try:
            conn.rollback()
        except psycopg.Error as again:
            self._inline_conns.pop((threading.get_ident(), "inline"), None)
            conn.close()
            return translate(again, self._db.url)
        return InlineAbort(f"{type(exc).__name__}: {exc}")

    def _inline_connection(self) -> psycopg.Connection[Any]:
        # One per recording thread (one per consumer group), with psycopg's
        # default tuple rows: users' transaction steps run on it.
        return self._thread_connection("inline")

    def _thread_connection(self, role: str) -> psycopg.Connection[Any]:
        """This thread's connection for `role` ("inline", "lookup")."""
        key = (threading.get_ident(), role)
        conn = self._inline_conns.get(key)
        if conn is None or conn.closed:
            conn = self._db.connect(dict_rows=False, tagged=True)
            self._inline_conns[key] = conn
        return conn

    def send_lookup(
        self, batch: Sequence[NewWorkflow], ask: Sequence[NewWorkflow] | None = None
    ) -> Lookup:
        """Engine.send_lookup: the contract is documented there."""
        lookup = Lookup(batch, ask)
        if not lookup.asked:
            return lookup  # answered: nothing to ask
        try:
            lookup.send(self._thread_connection("lookup"), self._q["existing_workflows"])
        except (psycopg.Error, OnceflowError) as exc:
            # Not asked: the batch asks on its own connection, which reports it.
            log.debug("lookup not sent ahead: %s", exc)
            lookup.rows()
        return lookup

    def insert_on(
        self,
        conn: psycopg.Connection[Any],
        batch: Sequence[NewWorkflow],
        outputs: dict[str, str] | None,
    ) -> psycopg.Cursor[Any] | None:
        """Send the insert of `batch` on `conn`: with `outputs` (their results
        by workflow ID), all run inline and inserted already SUCCESS, failing
        on a row that exists; without, PENDING (or ERROR), skipping those that
        exist, and the cursor's rows are the IDs inserted."""
        if not batch:
            return None
        keep_inputs = outputs is None or self.settings.inline_inputs
        rows = batch_document(batch, outputs, keep_inputs=keep_inputs)
        params = {"owner": self.executor_id, "rows": rows}
        if outputs is not None:
            conn.execute(self._q["insert_finished_workflows"], params)
            return None
        return conn.execute(self._q["insert_workflows"], params)

    def insert_batch(self, batch: Sequence[NewWorkflow]) -> set[str]:
        inserted = self._db.fetch_all(
            self._q["insert_workflows"],
            {"owner": self.executor_id, "rows": batch_document(batch)},
        )
        return {r["workflow_id"] for r in inserted}

    def inspect(
        self, workflow_ids: Sequence[str], *, holding: Container[str] = ()
    ) -> dict[str, Recorded]:
        """Engine.inspect: the contract is documented there."""
        rows = self._db.fetch_all(
            self._q["inspect_existing"],
            {
                "workflow_ids": list(workflow_ids),
                "lease": self.settings.lease,
            },
        )
        result: dict[str, Recorded] = {}
        to_claim: list[str] = []
        for r in rows:
            wid = r["workflow_id"]
            if r["status"] != Status.PENDING:
                result[wid] = Recorded(wid, Disposition.FINISHED)
            elif (
                wid in holding
                or self._runner.is_active(wid)
                or (r["owner_alive"] and r["owner"] != self.executor_id)
            ):
                result[wid] = Recorded(wid, Disposition.BUSY)
            else:
                to_claim.append(wid)
        for claimed in self.claim(to_claim):
            result[claimed.workflow_id] = Recorded(
                claimed.workflow_id, Disposition.CLAIMED, claimed
            )
        for wid in workflow_ids:
            result.setdefault(wid, Recorded(wid, Disposition.BUSY))
        return result

    def claim(self, workflow_ids: list[str]) -> list[Claimed]:
        if not workflow_ids:
            return []
        rows = self._db.fetch_all(
            self._q["claim_workflows"],
            {
                "workflow_ids": workflow_ids,
                "owner": self.executor_id,
                "lease": self.settings.lease,
            },
        )
        return sorted((claimed_from_row(r) for r in rows), key=lambda c: c.source_offset or 0)

    def claim_source(
        self, source: Source, *, holding: Container[str] = ()
    ) -> tuple[list[Claimed], list[tuple[str, int, tuple[Any, ...]]]]:
        """Engine.claim_source: the contract is documented there."""
        rows = self._db.fetch_all(
            self._q["pending_for_source"],
            {
                "group": source.group,
                "topic": source.topic,
                "partition": source.partition,
                "lease": self.settings.lease,
            },
        )
        rows = [r for r in rows if r["workflow_id"] not in holding]
        claimable = [
            r["workflow_id"]
            for r in rows
            if not self._runner.is_active(r["workflow_id"])
            and (not r["owner_alive"] or r["owner"] in (None, self.executor_id))
        ]
        claimed = self.claim(claimable)
        got = {c.workflow_id for c in claimed}
        waiting: list[tuple[str, int, tuple[Any, ...]]] = []
        for r in rows:
            if r["workflow_id"] not in got:
                try:
                    args = tuple(revive(r["input"])["args"])
                except Exception:  # undecodable here: its own run parks it in ERROR
                    args = ()
                waiting.append((r["workflow_id"], r["source_offset"], args))
        return claimed, waiting

    def release(self, workflow_ids: Sequence[str]) -> None:
        """Engine.release: the contract is documented there."""
        if workflow_ids:
            self._db.execute(
                self._q["release_workflows"],
                {
                    "workflow_ids": list(workflow_ids),
                    "owner": self.executor_id,
                },
            )


class SentInline:
    """An inline batch sent up to its COMMIT on its recording thread's
    connection, whose answers are not read yet (the pipeline is still open)."""

    def __init__(
        self,
        intake: SourceIntake,
        conn: psycopg.Connection[Any],
        pipeline: contextlib.ExitStack,
        sent: _inline.SentBatch,
    ) -> None:
        self._intake, self._conn, self._pipeline, self._sent = intake, conn, pipeline, sent

    def finish(self) -> tuple[set[str], set[str]]:
        """(inserted, completed) once the COMMIT is confirmed. Raises
        InlineAbort (rolled back) when a statement failed, DatabaseUnavailable
        when Postgres went away (the outcome is then unknown: the caller
        records the batch again, which finds what did commit)."""
        try:
            answer = self._sent.finish()
            self._pipeline.close()  # the sync: waits for the COMMIT's answer
        except psycopg.Error as exc:
            with contextlib.suppress(psycopg.Error):
                self._pipeline.close()
            raise self._intake._inline_failed(self._conn, exc) from exc
        return answer


class PendingRecord:
    """Engine.send_record's answer: `result()` waits for it (once)."""

    def __init__(
        self,
        intake: SourceIntake,
        batch: Sequence[NewWorkflow],
        holding: Container[str],
        sent: SentInline | None,
    ) -> None:
        self._intake, self._batch, self._holding, self._sent = intake, batch, holding, sent
        self._result: list[Recorded] | None = None

    @property
    def inline(self) -> bool:
        """Whether the batch was sent inline (its outcome may still fall back)."""
        return self._sent is not None

    def result(self) -> list[Recorded]:
        if self._result is None:
            sent, self._sent = self._sent, None
            self._result = self._intake.outcome(self._batch, self._holding, sent)
        return self._result
