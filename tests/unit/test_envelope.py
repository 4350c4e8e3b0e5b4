"""A record's envelope handed to an inline run with the Event decoded once."""

from __future__ import annotations

import orjson
from pydantic import BaseModel

from consumers import Event
from consumers._event import Envelope
from consumers._subscription import Subscription
from engine._serialize import dumps


class Order(BaseModel):
    id: int


def _subscription() -> Subscription:
    return Subscription(lambda e: None, "n", ("t",), "g", Order, "key", 1, 1, "inline")


def test_the_first_run_takes_the_event_decoded_at_consume_time_then_decodes_afresh() -> None:
    sub = _subscription()
    env = Envelope("t", 0, 7, b"k", b'{"id": 1}', 1_700_000_000_000, ())
    event = sub.decode(env, "wid")
    document = env.to_document(event)

    # Stored like the plain JSON form: nothing of the Event reaches Postgres.
    assert orjson.loads(dumps({"args": [document]})) == {"args": [env.to_json()]}
    assert document.take_event("wid") is event
    # Handed out once: a later run (an inline batch that fell back) decodes
    # the value again, whatever the first run did to it.
    event.value.id = 99
    assert document.take_event("wid") is None
    again: Event[Order] = sub.decode(Envelope.from_json(document), "wid")
    assert again is not event and again.value.id == 1
    assert Envelope.from_json(document) == env


def test_an_event_for_another_workflow_is_not_reused() -> None:
    sub = _subscription()
    env = Envelope("t", 0, 7, None, b'{"id": 1}', None, ())
    document = env.to_document(sub.decode(env, "wid"))
    assert document.take_event("other") is None
    assert sub.decode(Envelope.from_json(document), "other").workflow_id == "other"
