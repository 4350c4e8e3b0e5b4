"""Orders and payments: every order on the `orders` topic is billed exactly once.

Run it as a service (the topic must exist; `scripts/demo.py` does all of this):

    export ONCEFLOW_DATABASE_URL=postgresql://onceflow:onceflow@localhost:5432/onceflow
    export ONCEFLOW_KAFKA_BOOTSTRAP_SERVERS=localhost:9092
    onceflow run examples.orders.app:app

Each record becomes one durable workflow of three steps:

1. `reserve_stock`, a plain step: at-least-once, so it hands the stock service
   an idempotency key that is the same on every run of the step;
2. `record_payment`, a transaction step: its INSERT commits together with the
   step's checkpoint, so the payment row exists exactly once;
3. `send_receipt`, a plain step again, with its own idempotency key.

A record that is not a valid `Order` never reaches the handler: it is parked
as a workflow in ERROR, holding its raw bytes and the validation error.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from typing import Any

import psycopg
from pydantic import BaseModel, Field

from consumers import Event, KafkaApp
from engine import Engine, current_workflow_id, step_idempotency_key

log = logging.getLogger("examples.orders")

eng = Engine()  # ONCEFLOW_DATABASE_URL
app = KafkaApp(eng)  # ONCEFLOW_KAFKA_BOOTSTRAP_SERVERS

# Overridable so that tests can give each run a topic and group of its own.
TOPIC = os.environ.get("ORDERS_TOPIC", "orders")
GROUP = os.environ.get("ORDERS_GROUP", "billing")


class Order(BaseModel):
    """One order, as produced (JSON) on the `orders` topic, keyed by customer_id."""

    order_id: str
    customer_id: str
    sku: str
    quantity: int = Field(gt=0)
    amount_cents: int = Field(gt=0)


# The example's own table, in schema public (a role named like the Onceflow
# schema would otherwise create it there). No UNIQUE constraint on order_id, on purpose: the
# demo counts payments per order to show that none is ever written twice.
PAYMENTS_TABLE = """
CREATE TABLE IF NOT EXISTS public.payments (
    id           bigserial PRIMARY KEY,
    workflow_id  text NOT NULL,
    order_id     text NOT NULL,
    customer_id  text NOT NULL,
    amount_cents bigint NOT NULL,
    reservation  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
)
"""


def setup(conn: psycopg.Connection[Any]) -> None:
    """Create the example's table if missing; safe from concurrent processes."""
    with conn.transaction():
        # Two processes racing through CREATE TABLE IF NOT EXISTS can still
        # collide in the catalog: take turns.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('examples.orders.setup'))")
        conn.execute(PAYMENTS_TABLE)


@functools.cache
def _set_up() -> None:
    # Once per process, on first use. On a connection of its own: DDL has no
    # place in a step's transaction, which the engine shares with other steps.
    with psycopg.connect(eng.settings.url()) as conn:
        setup(conn)


@eng.step(retries=3)
def reserve_stock(order: Order) -> str:
    """Reserve the items with the stock service; returns the reservation ID."""
    key = step_idempotency_key()  # "{workflow_id}:{step}", the same on every retry
    # A real stock service gets `key` as its Idempotency-Key and answers a
    # repeated request with the reservation it made the first time. This
    # stand-in derives the reservation from the key the same way.
    return "rsv-" + hashlib.sha256(key.encode()).hexdigest()[:12]


@eng.transaction(retries=3)
def record_payment(conn: psycopg.Connection[Any], order: Order, reservation: str) -> int:
    """Insert the payment; it commits with this step's checkpoint, exactly once."""
    _set_up()
    row = conn.execute(
        "INSERT INTO public.payments (workflow_id, order_id, customer_id, amount_cents, reservation)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (current_workflow_id(), order.order_id, order.customer_id, order.amount_cents, reservation),
    ).fetchone()
    assert row is not None
    payment_id: int = row[0]
    return payment_id


@eng.step(retries=3)
def send_receipt(order: Order, payment_id: int) -> str:
    """Email the customer a receipt (here: a log line); returns the message ID."""
    key = step_idempotency_key()  # the mail service drops a second send with this key
    log.debug(
        "receipt for order %s, payment %d (idempotency key %s)", order.order_id, payment_id, key
    )
    return key


@app.subscribe(TOPIC, group=GROUP, model=Order, ordering="key")
def bill_order(event: Event[Order]) -> dict[str, Any]:
    """The workflow of one order. Records keyed by the same customer run one
    after another, in offset order; different customers run concurrently."""
    order = event.value
    reservation = reserve_stock(order)
    payment_id = record_payment(order, reservation)
    receipt = send_receipt(order, payment_id)
    return {"order_id": order.order_id, "payment_id": payment_id, "receipt": receipt}
