"""The event a handler receives, and how a record is stored as workflow input."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

T = TypeVar("T")

Headers = tuple[tuple[str, bytes | None], ...]


@dataclass(frozen=True, slots=True)
class Event(Generic[T]):
    """One Kafka record, as the subscribed handler sees it.

    Attributes:
        value: the record's value validated into the subscription's model,
            or the raw bytes when the subscription has no model.
        key: the record's key bytes (None when it has none).
        workflow_id: the ID of the workflow this record runs as.
    """

    value: T
    key: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp: datetime | None
    headers: Headers
    workflow_id: str


# The slots of Event, set directly by new_event.
_EVENT_SLOTS = tuple(
    Event.__dict__[name].__set__
    for name in (
        "value",
        "key",
        "topic",
        "partition",
        "offset",
        "timestamp",
        "headers",
        "workflow_id",
    )
)


def new_event(
    value: Any,
    key: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    timestamp: datetime | None,
    headers: Headers,
    workflow_id: str,
) -> Event[Any]:
    """`Event(...)` at half the cost, for the consumer's hot path: a frozen
    dataclass's __init__ guards every field it sets; this sets the slots."""
    event: Event[Any] = object.__new__(Event)
    s_value, s_key, s_topic, s_partition, s_offset, s_ts, s_headers, s_wid = _EVENT_SLOTS
    s_value(event, value)
    s_key(event, key)
    s_topic(event, topic)
    s_partition(event, partition)
    s_offset(event, offset)
    s_ts(event, timestamp)
    s_headers(event, headers)
    s_wid(event, workflow_id)
    return event


@dataclass(slots=True)
class Envelope:
    """A record as stored in the workflow's input: everything needed to rebuild
    its Event after a crash, without Kafka (the record may be long gone).
    Not frozen (one is built per record; see new_event), but never changed."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None
    headers: Headers

    def to_json(self) -> dict[str, Any]:
        # Text stays text so operators can read inputs in the table;
        # anything else is kept as bytes (the serializer tags them).
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "key": _text_or_bytes(self.key),
            "value": _text_or_bytes(self.value),
            "timestamp_ms": self.timestamp_ms,
            "headers": [[k, v] for k, v in self.headers],
        }

    def to_document(self, event: Event[Any]) -> EnvelopeDocument:
        """Stored as `to_json()`; carries this envelope and `event` (decoded
        from it) to the workflow's first run in this process."""
        return EnvelopeDocument(self, event)

    @classmethod
    def from_json(cls, data: dict[str, Any] | EnvelopeDocument) -> Envelope:
        if isinstance(data, EnvelopeDocument):
            return data.envelope
        return cls(
            topic=data["topic"],
            partition=data["partition"],
            offset=data["offset"],
            key=_as_bytes(data["key"]),
            value=_as_bytes(data["value"]),
            timestamp_ms=data["timestamp_ms"],
            headers=tuple((k, _as_bytes(v)) for k, v in data["headers"]),
        )

    def timestamp(self) -> datetime | None:
        global _last_timestamp
        ms = self.timestamp_ms
        if ms is None or ms < 0:
            return None
        # A producer's batch shares its millisecond: reuse the last datetime
        # (immutable) rather than build the same one per record.
        last = _last_timestamp
        if last[0] == ms:
            return last[1]
        ts = datetime.fromtimestamp(ms / 1000, UTC)
        _last_timestamp = (ms, ts)
        return ts


_last_timestamp: tuple[int, datetime] = (-1, datetime.fromtimestamp(0, UTC))


class EnvelopeDocument:
    """An envelope as a workflow's input: stored as its JSON form (`to_json`,
    through the engine's `__onceflow_json__` hook, built only if the input
    is stored), and carrying the envelope and the Event decoded from the
    record when it was consumed, so that the workflow's first run here
    neither parses JSON nor validates the value again. The Event is handed
    out once: a later run (after an inline batch fell back) decodes afresh,
    and never sees what an earlier run did to the Event's value."""

    __slots__ = ("_event", "envelope")

    def __init__(self, envelope: Envelope, event: Event[Any]) -> None:
        self.envelope = envelope
        self._event: Event[Any] | None = event

    def __onceflow_json__(self) -> dict[str, Any]:
        return self.envelope.to_json()

    def take_event(self, workflow_id: str) -> Event[Any] | None:
        """The Event decoded at consume time, once, if it is `workflow_id`'s."""
        event, self._event = self._event, None
        return event if event is not None and event.workflow_id == workflow_id else None


def _text_or_bytes(data: bytes | None) -> str | bytes | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def _as_bytes(data: str | bytes | None) -> bytes | None:
    if data is None or isinstance(data, bytes):
        return data
    return data.encode("utf-8")
