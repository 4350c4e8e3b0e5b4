"""A handler subscribed to topics under a group, and how its records decode."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from ._event import Envelope, Event, new_event
from ._scheduler import Ordering

ORDERINGS: tuple[Ordering, ...] = ("key", "partition", "none")
Execution = Literal["auto", "workers", "inline"]
EXECUTIONS: tuple[Execution, ...] = ("auto", "workers", "inline")


class BadRecord(Exception):
    """A record whose value does not decode into the subscription's model."""

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.detail = detail


@dataclass(frozen=True)
class Subscription:
    handler: Callable[[Event[Any]], Any]
    name: str  # the workflow name: stable across deploys, so recovery finds it
    topics: tuple[str, ...]
    group: str
    model: type[BaseModel] | None
    ordering: Ordering
    max_in_flight: int
    max_buffered: int
    execution: Execution = "auto"
    consumer_config: dict[str, Any] = field(default_factory=dict)

    def decode(self, envelope: Envelope, workflow_id: str) -> Event[Any]:
        """The handler's Event for a record; raises BadRecord if it doesn't fit."""
        value: Any = envelope.value
        if self.model is not None:
            if envelope.value is None:
                raise BadRecord(f"record has no value; {self.model.__name__} expected")
            try:
                # model_validate_json's own work, one Python call fewer per record.
                value = self.model.__pydantic_validator__.validate_json(envelope.value)
            except ValidationError as exc:
                raise BadRecord(
                    f"value does not fit {self.model.__name__}: {exc.error_count()} errors",
                    exc.errors(include_url=False, include_context=False),
                ) from exc
        return new_event(
            value,
            envelope.key,
            envelope.topic,
            envelope.partition,
            envelope.offset,
            envelope.timestamp(),
            envelope.headers,
            workflow_id,
        )
