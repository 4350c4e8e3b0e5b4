"""The chaos run's producer: keyed records at a fixed rate, through broker restarts.

Each record is JSON `{"id", "key", "seq"}`: `id` counts records, `seq` counts
within the key, so the checker can tell any loss, doubling or disorder. The
producer is idempotent (retries neither double nor reorder a key).

A librdkafka producer can stall after a broker restart: records stay queued
and nothing is acknowledged again (seen about once in twenty restarts here,
with no delivery error). That is the harness failing, not the system under
test, so the feeder replaces a producer that has acknowledged nothing for
`STALL_SECONDS` while records are outstanding: it purges the old one, reads
the topic to learn which of the purged records the broker had written
anyway, and produces only the others again, in their original order. The
topic then holds every record once, in order per key, as if nothing had
happened; each replacement is logged (`replacements`) and librdkafka's own
lines go to `log_path`. (A purged request still on the wire after a minute
of silence could yet be written; the checker, which reads the topic, would
show that as a doubled record rather than hide it.)
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from pathlib import Path

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from bench.chaos_config import ChaosConfig


class Feeder(threading.Thread):
    """Produces `records` keyed records at `rate` a second, then flushes."""

    STALL_SECONDS = 45.0

    def __init__(
        self, bootstrap: str, topic: str, config: ChaosConfig, seed: int, log_path: Path
    ) -> None:
        super().__init__(name="chaos-feeder", daemon=True)
        self.bootstrap, self.topic, self.config, self.seed = bootstrap, topic, config, seed
        self.log_path = log_path
        self.sent = 0
        self.acked = 0
        self.errors: list[str] = []
        self.replacements: list[str] = []
        self.stopping = threading.Event()
        self._log = self._librdkafka_log()
        self._last_ack = time.monotonic()
        self._acked_top: dict[int, int] = {}  # partition -> highest acknowledged offset
        self._purged: list[tuple[bytes, bytes]] = []  # (key, value) of purged records
        self._producer = self._new_producer()

    # -- producing ------------------------------------------------------------

    def run(self) -> None:
        rng = random.Random(self.seed)
        seqs = [0] * self.config.keys
        start = time.monotonic()
        try:
            while self.sent < self.config.records and not self.stopping.is_set():
                due = min(self.config.records, int((time.monotonic() - start) * self.config.rate))
                while self.sent < due:
                    k = rng.randrange(self.config.keys)
                    key = f"k{k}"
                    value = json.dumps({"id": self.sent, "key": key, "seq": seqs[k]}).encode()
                    if not self._produce(key.encode(), value):
                        return
                    seqs[k] += 1
                    self.sent += 1
                self._producer.poll(0.02)
                self._replace_if_stalled()
        finally:
            deadline = time.monotonic() + 600
            while self._producer.flush(1.0) and time.monotonic() < deadline:
                self._replace_if_stalled()
            left = len(self._producer)
            if left:
                self.errors.append(f"{left} records never delivered")

    def _produce(self, key: bytes, value: bytes) -> bool:
        while True:
            try:
                self._producer.produce(self.topic, value, key, on_delivery=self._delivered)
                return True
            except BufferError:  # the local queue is full: the broker is away
                if self.stopping.is_set():
                    return False
                self._producer.poll(0.1)
                self._replace_if_stalled()

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.acked += 1
            self._last_ack = time.monotonic()
            partition, offset = msg.partition(), msg.offset()
            if partition is not None and offset is not None:
                self._acked_top[partition] = max(offset, self._acked_top.get(partition, -1))
        elif err.code() in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT):
            self._purged.append((msg.key() or b"", msg.value() or b""))
        else:
            self.errors.append(str(err))

    def _new_producer(self) -> Producer:
        return Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "enable.idempotence": True,  # retries neither double nor reorder a key
                "linger.ms": 5,
                "message.timeout.ms": 600_000,  # outlast any broker restart
                "logger": self._log,
            }
        )

    def _librdkafka_log(self) -> logging.Logger:
        # librdkafka is chatty during broker restarts: its lines go to a file.
        log = logging.getLogger(f"chaos.producer.{self.topic}")
        log.propagate = False
        handler = logging.FileHandler(self.log_path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        return log

    # -- a stalled producer ---------------------------------------------------

    def _replace_if_stalled(self) -> None:
        outstanding = len(self._producer)
        quiet = time.monotonic() - self._last_ack
        if not outstanding or quiet < self.STALL_SECONDS:
            return
        old, self._purged = self._producer, []
        old.purge(in_queue=True, in_flight=True, blocking=True)
        old.poll(0)  # serves the purged records' delivery reports
        purged = sorted(self._purged, key=lambda kv: json.loads(kv[1])["id"])
        written = self._read_back()
        if written is None:
            self.errors.append("producer stalled, and the topic could not be read back")
            self._producer = self._new_producer()
            return
        again = [(k, v) for k, v in purged if json.loads(v)["id"] not in written]
        self.acked += len(purged) - len(again)  # the broker had them: acknowledged now
        self._producer = self._new_producer()
        self._last_ack = time.monotonic()
        note = (
            f"producer stalled ({outstanding} outstanding, no acknowledgement for {quiet:.0f}s);"
            f" replaced: {len(purged) - len(again)} of its purged records were written,"
            f" {len(again)} produced again"
        )
        self.replacements.append(note)
        self._log.warning(note)
        for key, value in again:
            if not self._produce(key, value):
                return

    def _read_back(self, patience: float = 120.0) -> set[int] | None:
        # Just after a broker restart partitions may have no leader yet.
        deadline = time.monotonic() + patience
        while True:
            try:
                return self._written_since_acked()
            except (KafkaException, TimeoutError) as exc:
                if time.monotonic() > deadline:
                    self._log.error("reading the topic back failed: %s", exc)
                    return None
                time.sleep(1.0)

    def _written_since_acked(self) -> set[int]:
        """IDs of the records the topic holds past each partition's highest
        acknowledged offset: ones the stalled producer had written but not
        heard back about. The idempotent producer leaves no gaps, so what is
        missing here was never written."""
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"{self.topic}-feeder-check",
                "enable.auto.commit": False,
            }
        )
        try:
            meta = consumer.list_topics(self.topic, timeout=30).topics[self.topic]
            parts = [
                TopicPartition(self.topic, p, self._acked_top.get(p, -1) + 1)
                for p in meta.partitions
            ]
            ends = {p.partition: consumer.get_watermark_offsets(p, timeout=30)[1] for p in parts}
            pending = {p.partition for p in parts if p.offset < ends[p.partition]}
            consumer.assign(parts)
            ids: set[int] = set()
            while pending:
                msg = consumer.poll(5.0)
                if msg is None:
                    raise TimeoutError("reading the topic back after a producer stall timed out")
                if msg.error() is not None:
                    continue
                ids.add(int(json.loads(msg.value() or b"{}")["id"]))
                offset = msg.offset() or 0
                if offset + 1 >= ends[msg.partition() or 0]:
                    pending.discard(msg.partition() or 0)
            return ids
        finally:
            consumer.close()
