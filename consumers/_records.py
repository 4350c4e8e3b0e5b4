"""Kafka records as the engine records them: a message's Envelope, and the
NewWorkflow each record is recorded as."""

from __future__ import annotations

from typing import Any

import orjson
from confluent_kafka import Message

from engine import NewWorkflow, Source

from ._event import Envelope, EnvelopeDocument, Headers
from ._ids import workflow_id
from ._subscription import BadRecord, Subscription


def envelope(msg: Message) -> Envelope:
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None
    ts_type, ts = msg.timestamp()
    headers = msg.headers()
    return Envelope(
        topic,
        partition,
        offset,
        msg.key(),
        msg.value(),
        ts if ts_type else None,
        _headers(headers) if headers else (),
    )


def _headers(headers: Any) -> Headers:
    if isinstance(headers, dict):
        headers = list(headers.items())
    return tuple((k, v.encode() if isinstance(v, str) else v) for k, v in headers)


def new_workflow(group: str, sub: Subscription, topic_id: str, env: Envelope) -> NewWorkflow:
    """The workflow `env` runs as; a record that does not decode comes with
    its `failure` set (a bad record)."""
    wid = workflow_id(group, env.topic, topic_id, env.partition, env.offset)
    failure = None
    event = None
    try:
        event = sub.decode(env, wid)
    except BadRecord as exc:
        # Parked as a failed workflow with its raw bytes: not dropped,
        # and the partition goes on (DESIGN.md §4 step 2).
        failure = {
            "type": "BadRecord",
            "message": str(exc),
            "detail": orjson.dumps(exc.detail, default=str).decode(),
        }
    key = None if env.key is None else env.key.decode("utf-8", "backslashreplace")
    source = Source(group, env.topic, env.partition, env.offset, key)
    # An inline run comes at once, in this thread: it takes the Event just
    # decoded rather than validating the value again. Workers runs may come
    # much later: their queued input stays small.
    payload: dict[str, Any] | EnvelopeDocument
    if event is not None and sub.execution != "workers":
        payload = env.to_document(event)
    else:
        payload = env.to_json()
    return NewWorkflow(wid, sub.name, (payload,), source=source, failure=failure)
