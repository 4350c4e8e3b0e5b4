"""Produce sample orders: `python -m examples.orders.produce --events 2000`.

Orders are keyed by customer ID, so a customer's orders share a partition and
are billed in order (the subscription's `ordering="key"`). One record in a
hundred is broken on purpose (not JSON, a negative amount, a missing field) to
show the consumer parking what it cannot decode in ERROR instead of dropping it
or blocking the partition.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

TOPIC = "orders"
SKUS = ("apple", "banana", "cherry", "damson", "elderberry", "fig")
INVALID_EVERY = 100  # one broken record per hundred


@dataclass(frozen=True)
class Delivered:
    """Where one produced record landed, and whether it is a valid Order."""

    partition: int
    offset: int
    valid: bool


def sample_records(
    count: int, *, run_id: str, customers: int = 50, seed: int = 0
) -> Iterator[tuple[str, bytes, bool]]:
    """(key, value, valid) for `count` orders; order IDs are unique per `run_id`."""
    rng = random.Random(seed)
    for i in range(count):
        customer = f"cust-{rng.randrange(customers):03d}"
        order: dict[str, Any] = {
            "order_id": f"{run_id}-{i:06d}",
            "customer_id": customer,
            "sku": rng.choice(SKUS),
            "quantity": rng.randint(1, 5),
            "amount_cents": rng.randint(500, 50_000),
        }
        if i % INVALID_EVERY == INVALID_EVERY // 2:
            yield customer, _broken(order, i // INVALID_EVERY), False
        else:
            yield customer, json.dumps(order).encode(), True


def _broken(order: dict[str, Any], n: int) -> bytes:
    kind = n % 3
    if kind == 0:
        return f"this is not JSON: {order['order_id']}".encode()
    if kind == 1:
        return json.dumps({**order, "amount_cents": -order["amount_cents"]}).encode()
    return json.dumps({k: v for k, v in order.items() if k != "customer_id"}).encode()


def produce(
    bootstrap: str,
    count: int,
    *,
    topic: str = TOPIC,
    run_id: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Delivered]:
    """Produce `count` sample orders to `topic`; return where each one landed.

    Raises:
        RuntimeError: a record could not be delivered.
    """
    # Idempotent producer: a retried send never writes a record twice, so the
    # topic holds exactly `count` new records and the demo can account for each.
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5}
    )
    delivered: list[Delivered] = []
    errors: list[str] = []

    def report(valid: bool) -> Callable[[KafkaError | None, Message], None]:
        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            partition, offset = msg.partition(), msg.offset()
            if err is None and partition is not None and offset is not None:
                delivered.append(Delivered(partition, offset, valid))
            else:
                errors.append(str(err))

        return on_delivery

    records = sample_records(count, run_id=run_id or uuid.uuid4().hex[:8])
    for i, (key, value, valid) in enumerate(records, start=1):
        while True:
            try:
                producer.produce(topic, value, key.encode(), on_delivery=report(valid))
                break
            except BufferError:  # local queue full: let deliveries drain it
                producer.poll(0.1)
        producer.poll(0)
        if progress is not None and (i % 500 == 0 or i == count):
            progress(i, count)
    if producer.flush(60) > 0:
        raise RuntimeError(f"{len(producer)} records still undelivered to {bootstrap} after 60s")
    if errors:
        raise RuntimeError(f"{len(errors)} records not delivered to {topic!r}: {errors[0]}")
    return delivered


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="orders to produce (default 2000)")
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("ONCEFLOW_KAFKA_BOOTSTRAP_SERVERS", "localhost:9092"),
        help="Kafka bootstrap servers (default: ONCEFLOW_KAFKA_BOOTSTRAP_SERVERS or localhost:9092)",
    )
    parser.add_argument("--topic", default=TOPIC)
    args = parser.parse_args(argv)
    delivered = produce(
        args.bootstrap,
        args.events,
        topic=args.topic,
        progress=lambda done, total: print(f"produced {done}/{total}", flush=True),
    )
    invalid = sum(1 for d in delivered if not d.valid)
    print(
        f"{len(delivered)} records on {args.topic!r}: {len(delivered) - invalid} orders,"
        f" {invalid} broken on purpose"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
