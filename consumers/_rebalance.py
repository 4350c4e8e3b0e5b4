"""Partition ownership for one group's consumer: rebalance callbacks, the
hand-over of earlier work on assign, topic incarnations, letting go.

GroupConsumer (consumers/_group.py) runs the loop and takes this in; the
attributes below are its. On assign, a partition stays paused until the
earlier PENDING workflows of it are claimed here or known held elsewhere
(`_check_handover`), so per-key order survives a rebalance (DESIGN.md §5).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from engine import DatabaseUnavailableError, Engine, Source

from ._event import Envelope
from ._fresh import FreshPartitions
from ._lanes import GroupStats, Item, Lanes
from ._scheduler import TP
from ._topics import describe_topics, patiently

log = logging.getLogger("onceflow.consumer")


class Rebalancing:
    """What a group's consumer does when partitions come and go."""

    engine: Engine
    group: str
    kafka_conf: dict[str, Any]
    revoke_timeout: float
    stats: GroupStats
    lanes: Lanes
    positions: dict[TP, int]
    _lock: threading.RLock
    _fresh: FreshPartitions
    _topic_ids: dict[str, str]
    _assigned: set[TP]
    _handover: set[TP]  # assigned, paused until earlier work is claimed
    _full: set[TP]  # paused for backpressure
    _next_check: float

    def _finish_sent(self) -> None:
        """Settle the batch in flight (GroupConsumer's)."""
        raise NotImplementedError

    def _check_handover(self, consumer: Consumer) -> None:
        """Put the earlier PENDING workflows of newly assigned partitions ahead
        of everything in their lanes, in offset order: the ones claimed now run,
        the ones another executor still holds (or holds locked, frozen mid-
        commit) wait as placeholders until they end or can be claimed
        (Lanes.check_foreign). Only then is the partition resumed, so per-key order
        survives the hand-over (DESIGN.md §5)."""
        for tp in sorted(self._handover):
            # Lanes kept through a lost assignment (_on_lost) may still
            # queue work that was taken over, finished or handed back
            # meanwhile: drop it from the lanes, so that the database says
            # afresh, below, which of it is still to run and by whom.
            self.lanes.take_queued(tp)
            try:
                claimed, waiting = self.engine.claim_source(
                    Source(self.group, tp[0], tp[1], 0), holding=self.lanes.held()
                )
            except DatabaseUnavailableError as exc:
                log.warning("group %s: hand-over check failed: %s", self.group, exc)
                return
            entries: list[tuple[int, str, bytes | None, Item]] = []
            for c in claimed:
                env = Envelope.from_json(c.args[0])
                entries.append((env.offset, c.workflow_id, env.key, (c, False)))
            for wid, offset, args in waiting:
                key = Envelope.from_json(args[0]).key if args else None
                entries.append((offset, wid, key, None))
            with self._lock:
                if tp not in self._assigned:
                    self.lanes.release_later([c.workflow_id for c in claimed])
                    continue
                for offset, wid, key, item in sorted(entries, key=lambda e: e[0]):
                    self.lanes.add(tp, key, offset, wid, item)
                self.stats.handed_over += len(claimed)
                self._handover.discard(tp)
                if tp not in self._full:
                    consumer.resume([TopicPartition(*tp)])
            if waiting:
                log.info(
                    "group %s: %s-%d: %d earlier workflows held elsewhere go first",
                    self.group,
                    tp[0],
                    tp[1],
                    len(waiting),
                )
        self.lanes.dispatch()

    # -- rebalance ------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # A rebalance comes inside poll(), maybe with a batch's COMMIT on its
        # way: that batch is settled first, under the assignment it came from.
        self._finish_sent()
        tps = {(p.topic, p.partition) for p in partitions}
        self._fresh.forget(tps)
        # The topic ID is the topic's incarnation, part of every workflow ID:
        # looked up afresh on every assignment (a topic may have been recreated).
        self._refresh_topic_ids(sorted({t for t, _ in tps}))
        consumer.assign(partitions)
        # Paused until the hand-over check has claimed earlier work (_tick).
        consumer.pause(partitions)
        with self._lock:
            self._assigned |= tps
            self._handover |= tps
        self._next_check = 0.0
        log.info("group %s assigned %s", self.group, _names(tps))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._finish_sent()
        tps = {(p.topic, p.partition) for p in partitions}
        self._fresh.forget(tps)
        self._let_go(tps, wait=self.revoke_timeout)
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("group %s: commit on revoke failed: %s", self.group, exc)
        log.info("group %s revoked %s", self.group, _names(tps))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group dropped us (Kafka unreachable past the session timeout, or
        this process was frozen). Take no more records from these partitions,
        but keep running, lane by lane, the workflows recorded and held here:
        they are durable and ours, and a new owner of the partition waits for
        them (_check_handover). Handing them back would stall them for the
        outage. If this process was frozen past its lease, another executor
        may have taken them over: our runs are then fenced off, and each stays
        at the head of its lane until it is final (Lanes._finished)."""
        self._finish_sent()
        tps = {(p.topic, p.partition) for p in partitions}
        self._fresh.forget(tps)
        with self._lock:
            self._assigned -= tps
            self._handover -= tps
            self._full -= tps
        log.info("group %s lost %s; finishing the work it holds", self.group, _names(tps))

    def _refresh_topic_ids(self, topics: list[str]) -> bool:
        """Look the topics' IDs up again; True if one changed."""
        changed = False
        # A rebalance can come while the broker flaps: wait for it a little
        # (an ID is needed before any record of the topic is recorded).
        found = patiently(
            "looking up topic IDs",
            lambda: describe_topics(self.kafka_conf, topics),
            patience=60.0,
        )
        for topic, (topic_id, _) in found.items():
            if self._topic_ids.get(topic, topic_id) != topic_id:
                log.warning("group %s: topic %s was recreated (new topic ID)", self.group, topic)
                changed = True
            self._topic_ids[topic] = topic_id
        return changed

    def _check_rewinds(self, envelopes: list[Envelope]) -> bool:
        """A partition whose offsets went backwards was rewound, or its topic
        deleted and recreated (offsets restart at 0). Only the topic ID tells
        the two apart, so look it up before any workflow ID is made from it:
        a stale ID would take the new records for the old ones and skip them
        (DESIGN.md §9)."""
        rewound = {
            (env.topic, env.partition)
            for env in envelopes
            if env.offset < self.positions.get((env.topic, env.partition), -1)
        }
        self._fresh.forget(rewound)
        return bool(rewound) and self._refresh_topic_ids(sorted({t for t, _ in rewound}))

    def _let_go(self, tps: set[TP], *, wait: float) -> None:
        """Stop taking work for these partitions: hand back what never started,
        give running workflows `wait` seconds, then hand those back too (their
        new owner resumes them from their last checkpoint)."""
        with self._lock:
            waiting, running = self.lanes.drop(tps)
            self._assigned -= tps
            self._handover -= tps
            self._full -= tps
        self.lanes.hand_back(waiting, running, wait=wait)

    def _close(self, consumer: Consumer) -> None:
        with self._lock:
            tps = set(self._assigned)
        self._let_go(tps, wait=self.revoke_timeout)
        for attempt in range(1, 6):
            if not self.lanes.unreleased():
                break
            time.sleep(0.1 * attempt)
            self.lanes.retry_releases()
        if self.lanes.unreleased():
            log.error(
                "group %s: could not hand %d workflows back; they wait for this"
                " executor's lease to run out",
                self.group,
                self.lanes.unreleased(),
            )
        with contextlib.suppress(KafkaException):
            consumer.commit(asynchronous=False)
        consumer.close()
        log.info("group %s stopped", self.group)


def _names(tps: set[TP]) -> str:
    return ", ".join(f"{t}-{p}" for t, p in sorted(tps)) or "nothing"
