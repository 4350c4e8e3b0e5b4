"""One consumer group's service loop: poll, decode, record, commit, run.

The order is the guarantee (DESIGN.md §4): the batch's workflows are
committed in Postgres first (`_send`, then `_finish_sent` reads the COMMIT's
answer), and only then are the records' offsets stored for Kafka to commit
(`_settle`). A crash between the two redelivers the batch, which finds its
rows already there.

An inline batch is sent up to its COMMIT without waiting: the loop polls and
decodes the next records meanwhile, which needs nothing of that batch. Every
other step that reads Postgres or the lanes from this thread (recording the
next batch, rebalance callbacks, hand-over checks, closing) settles the sent
batch first, so none of them ever sees it half done.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from engine import (
    DatabaseUnavailableError,
    Disposition,
    Engine,
    Lookup,
    NewWorkflow,
    PendingRecord,
    Recorded,
)

from . import _faults
from ._event import Envelope
from ._fresh import FreshPartitions
from ._inline_policy import COOL_OFF_AFTER_FALLBACK, BatchPolicy, InlineGovernor, inline_policy
from ._lanes import GroupStats, Item, Lanes
from ._rebalance import Rebalancing
from ._records import envelope, new_workflow
from ._scheduler import TP
from ._subscription import Subscription

log = logging.getLogger("onceflow.consumer")


# An envelope's partition, and its offset (for passes over a whole batch).
_TP_OF = attrgetter("topic", "partition")
_OFFSET_OF = attrgetter("offset")


@dataclass
class _Sent:
    """A batch whose recording was sent (up to its COMMIT, when it runs
    inline) and whose offsets and lanes wait for the answer."""

    envelopes: list[Envelope]
    items: list[NewWorkflow]
    held: set[str]
    inline: BatchPolicy | None
    pending: PendingRecord | None  # None: Postgres was away at send time


class GroupConsumer(Rebalancing):
    """Consumes the topics of one group and runs each record as a workflow
    (partitions coming and going: Rebalancing, consumers/_rebalance.py)."""

    def __init__(
        self,
        engine: Engine,
        group: str,
        subscriptions: list[Subscription],
        kafka_conf: dict[str, Any],
        *,
        batch_size: int = 500,
        poll_timeout: float = 0.1,
        revoke_timeout: float = 10.0,
    ) -> None:
        self.engine = engine
        self.group = group
        self.routes = {t: s for s in subscriptions for t in s.topics}
        self.stats = GroupStats()
        self.lanes = Lanes(engine, group, self.routes, self.stats)
        self._lock = self.lanes.lock  # also guards the assignment state below
        self._governor = InlineGovernor()
        self._fresh = FreshPartitions()
        self.kafka_conf = kafka_conf
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.revoke_timeout = revoke_timeout
        self._topic_ids: dict[str, str] = {}
        self._assigned: set[TP] = set()
        self._handover: set[TP] = set()  # assigned, paused until earlier work is claimed
        self._full: set[TP] = set()  # paused for backpressure
        self._next_check = 0.0
        self._consumer: Consumer | None = None
        self.positions: dict[TP, int] = {}
        self._sent: _Sent | None = None

    # -- the loop -------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        conf = {
            "auto.offset.reset": "earliest",
            # Under a steady trickle the broker would answer every fetch with a
            # record or two, and each would become a Postgres transaction of
            # its own: a fetch waits up to 10 ms for 32 KB instead. At 3,000
            # records/s this takes a quarter of the machine's CPU off (broker,
            # consumer and Postgres) for a few ms of latency (bench/README.md).
            "fetch.wait.max.ms": 10,
            "fetch.min.bytes": 32768,
            **self.kafka_conf,
            **{k: v for s in self.routes.values() for k, v in s.consumer_config.items()},
            "group.id": self.group,
            # Offsets are stored by hand, only after the Postgres commit; the
            # client then commits stored offsets in the background.
            "enable.auto.offset.store": False,
            "enable.auto.commit": True,
        }
        consumer = Consumer(conf)
        self._consumer = consumer
        consumer.subscribe(
            sorted(self.routes),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info("group %s subscribed to %s", self.group, ", ".join(sorted(self.routes)))
        try:
            while not stop.is_set():
                # While a batch's COMMIT is on its way, only look for more.
                first = consumer.poll(0 if self._sent else self.poll_timeout)
                batch = [] if first is None else [first]
                if first is not None and self.batch_size > 1:
                    # Take what is already fetched without waiting for more:
                    # a full batch under load, no added latency when idle.
                    batch.extend(consumer.consume(self.batch_size - 1, timeout=0))
                # (An error-free message, nearly all of them, skips the call.)
                records = [m for m in batch if m.error() is None or self._usable(m)]
                if records:
                    self._ingest(records)
                else:
                    self._finish_sent()
                self._tick()
        finally:
            try:
                self._finish_sent()
            finally:
                self._close(consumer)

    def _usable(self, msg: Message) -> bool:
        err = msg.error()
        if err is None:
            return True
        if err.code() == KafkaError._PARTITION_EOF:
            return False
        if err.fatal():
            raise KafkaException(err)
        log.warning("group %s: Kafka reports %s", self.group, err)
        return False

    # -- ingestion: decode, record, store offsets, schedule -------------------

    def _ingest(self, records: list[Message]) -> None:
        """Take a poll's records: decode them (which needs nothing of the
        batch before, so it goes on while Postgres commits that one), settle
        the batch before, and send this one."""
        envelopes = [envelope(msg) for msg in records]
        items = self._workflows_for(envelopes)
        lookup = self._send_lookup(items)
        self._finish_sent()
        self._send(envelopes, items, lookup)

    def _send_lookup(self, items: list[NewWorkflow]) -> Lookup | None:
        """While the batch before commits, ask which of these workflows
        exist (on another connection), if they may run inline: the batch
        then finds the answer there instead of waiting for it."""
        if not any(self._governor.inline(s) for s in self.routes.values()):
            return None
        ask = self._fresh.to_ask(items)
        if self._sent is None and ask:
            return None  # nothing to overlap: the batch asks on its own connection
        return self.engine.send_lookup(items, ask=ask)

    def _send(
        self, envelopes: list[Envelope], items: list[NewWorkflow], lookup: Lookup | None = None
    ) -> None:
        """Record a batch: sent up to its COMMIT when it runs inline, finished
        (offsets stored, lanes fed) by `_finish_sent` before anything else
        touches Postgres or the lanes from this thread."""
        if self._check_rewinds(envelopes):
            # A topic was recreated: its workflow IDs change with its ID.
            items = self._workflows_for(envelopes)
        self.stats.consumed += len(envelopes)
        self.stats.bad_records += sum(1 for item in items if item.failure is not None)
        _faults.reached("before_record")
        held = self.lanes.held()
        inline = inline_policy(
            self.routes, self.lanes.scheds, self._lock, envelopes, self._governor, self._owns
        )
        pending: PendingRecord | None = None
        try:
            pending = self.engine.send_record(items, holding=held, inline=inline, lookup=lookup)
        except DatabaseUnavailableError as exc:
            log.warning("group %s: cannot record %d records: %s", self.group, len(items), exc)
        self._sent = _Sent(envelopes, items, held, inline, pending)
        if pending is None or not pending.inline:
            # Nothing in flight (recorded already, or Postgres away): settled
            # now, so that backpressure (_tick) counts this batch at once.
            self._finish_sent()

    def _finish_sent(self) -> None:
        """The batch sent last: wait for its COMMIT, then store its offsets
        and queue what it left to run."""
        sent, self._sent = self._sent, None
        if sent is None:
            return
        recorded: list[Recorded] | None = None
        if sent.pending is not None:
            try:
                recorded = sent.pending.result()
                self._after_inline(sent.inline, recorded)
            except DatabaseUnavailableError as exc:
                # Its COMMIT may or may not have landed: recording the batch
                # again finds out (a workflow that committed is final).
                log.warning("group %s: batch outcome unknown, recording again: %s", self.group, exc)
        if recorded is None:
            recorded = self._record(sent.items, sent.held, sent.envelopes)
        _faults.reached("after_record")
        self._settle(sent.envelopes, recorded)

    def _settle(self, envelopes: list[Envelope], recorded: list[Recorded]) -> None:
        # Only now, with the batch durable in Postgres, may Kafka move on.
        tps = self._store_offsets(envelopes)
        completed = all(r.disposition is Disposition.COMPLETED for r in recorded)
        self._fresh.learn(envelopes, recorded, self._assigned, all_inserted=completed)
        if completed and tps <= self._assigned:
            # The usual inline batch: all run to their end, nothing to queue.
            self.stats.recorded += len(recorded)
            self.stats.succeeded += len(recorded)
            self.lanes.retry_releases()
            self.lanes.dispatch()
            return
        release: list[str] = []
        with self._lock:
            for env, rec in zip(envelopes, recorded, strict=True):
                tp = (env.topic, env.partition)
                if tp not in self._assigned:  # revoked while we were recording
                    if rec.claimed is not None:
                        release.append(rec.workflow_id)
                    continue
                if rec.disposition is Disposition.COMPLETED:
                    self.stats.recorded += 1
                    self.stats.succeeded += 1
                    continue
                if rec.disposition is Disposition.NEW:
                    self.stats.recorded += 1
                elif rec.disposition is not Disposition.CLAIMED:
                    self.stats.duplicates += 1
                item: Item
                if rec.claimed is not None:
                    item = (rec.claimed, rec.fresh)
                elif rec.disposition is Disposition.BUSY:
                    item = None
                else:
                    continue
                self.lanes.add(tp, env.key, env.offset, rec.workflow_id, item)
        self.lanes.release_later(release)
        self.lanes.retry_releases()
        self.lanes.dispatch()

    def _workflows_for(self, envelopes: list[Envelope]) -> list[NewWorkflow]:
        group, routes, ids = self.group, self.routes, self._topic_ids
        return [new_workflow(group, routes[e.topic], ids[e.topic], e) for e in envelopes]

    def _owns(self, tp: TP) -> bool:
        """Whether `tp` is assigned here with its hand-over done (call under _lock)."""
        return tp in self._assigned and tp not in self._handover

    def _record(
        self, items: list[NewWorkflow], held: set[str], envelopes: list[Envelope]
    ) -> list[Any]:
        delay = 0.1
        while True:
            try:
                inline = inline_policy(
                    self.routes,
                    self.lanes.scheds,
                    self._lock,
                    envelopes,
                    self._governor,
                    self._owns,
                )
                recorded = self.engine.record(items, holding=held, inline=inline)
                self._after_inline(inline, recorded)
                return recorded
            except DatabaseUnavailableError as exc:
                # No offset is stored while Postgres is away; the batch waits
                # here and Kafka keeps the records (DESIGN.md §7).
                log.warning(
                    "group %s: cannot record %d records, retrying in %.1fs: %s",
                    self.group,
                    len(items),
                    delay,
                    exc,
                )
                time.sleep(delay)
                delay = min(5.0, delay * 2)

    def _after_inline(self, inline: BatchPolicy | None, recorded: list[Recorded]) -> None:
        fell_back = not any(r.disposition is Disposition.COMPLETED for r in recorded)
        if inline is not None and inline.picked and fell_back:
            # The inline attempt rolled back (a handler raised).
            for sub in inline.picked.values():
                self._governor.cool_off(sub, COOL_OFF_AFTER_FALLBACK, "an inline batch fell back")

    def _store_offsets(self, envelopes: list[Envelope]) -> set[TP]:
        """Store the offsets after `envelopes`; the partitions they are of."""
        # A partition's records come in offset order, so its last is the
        # one to store after; built at C speed (this runs for every record).
        top: dict[TP, int] = dict(
            zip(map(_TP_OF, envelopes), map(_OFFSET_OF, envelopes), strict=True)
        )
        offsets = [
            TopicPartition(t, p, o + 1) for (t, p), o in top.items() if (t, p) in self._assigned
        ]
        for tp, o in top.items():
            self.positions[tp] = o + 1
        if offsets and self._consumer is not None:
            try:
                self._consumer.store_offsets(offsets=offsets)
            except KafkaException as exc:  # partition revoked meanwhile: redelivery dedups
                log.info("group %s: offsets not stored (%s)", self.group, exc)
        return set(top)

    # -- periodic work: backpressure, hand-over, waiting on others ------------

    def _tick(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        with self._lock:
            full = {tp for tp in self._assigned - self._full if self.lanes.is_full(tp)}
            roomy = {tp for tp in self._full if self.lanes.has_room(tp)}
        if full:
            consumer.pause([TopicPartition(t, p) for t, p in full])
            self._full |= full
        if roomy:
            self._full -= roomy
            resume = roomy - self._handover
            if resume:
                consumer.resume([TopicPartition(t, p) for t, p in resume])
        now = time.monotonic()
        if now >= self._next_check:
            self._finish_sent()  # the checks below read Postgres and the lanes
            self._next_check = now + 0.5
            self._check_handover(consumer)
            self.lanes.check_foreign()
            self.lanes.retry_releases()

    # -- progress -------------------------------------------------------------

    def in_flight(self) -> int:
        return self.lanes.in_flight()

    def buffered(self) -> int:
        return self.lanes.buffered()
