"""Workflow IDs for Kafka records: a pure function of where the record sits."""

from __future__ import annotations

import functools
import re

# Kafka topic names are [a-zA-Z0-9._-]; topic IDs are base64 (standard or URL-safe); partition and
# offset are integers. None of those can hold ":", so the first five fields
# split unambiguously and the group, which may hold anything, goes last.
_TOPIC = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
_TOPIC_ID = re.compile(r"^[a-zA-Z0-9+/=_-]+$")


def workflow_id(group: str, topic: str, topic_id: str, partition: int, offset: int) -> str:
    """The workflow ID of one Kafka record, as consumed by one group.

    `kafka:{topic}:{topic_id}:{partition}:{offset}:{group}`. The topic ID is
    the topic's incarnation (Kafka gives a deleted and recreated topic a new
    one), so records of a recreated topic, whose offsets start again at 0,
    are never mistaken for the old topic's. Injective: two different records
    (or groups) never share an ID, and the same record always gets the same.

    Raises:
        ValueError: on a name Kafka would not accept or a negative number.
    """
    if partition < 0 or offset < 0:
        raise ValueError(f"partition and offset must not be negative ({partition}, {offset})")
    head, tail = _around_offset(group, topic, topic_id, partition)
    return f"{head}{offset}{tail}"


@functools.lru_cache(maxsize=4096)
def _around_offset(group: str, topic: str, topic_id: str, partition: int) -> tuple[str, str]:
    """What comes before and after the offset in a partition's workflow IDs,
    checked once per partition rather than once per record (the consumer
    makes an ID for every record). Errors are raised, never cached."""
    if not group:
        raise ValueError("group must not be empty")
    if not _TOPIC.match(topic):
        raise ValueError(f"{topic!r} is not a valid Kafka topic name")
    if not _TOPIC_ID.match(topic_id):
        raise ValueError(f"{topic_id!r} is not a Kafka topic ID")
    return f"kafka:{topic}:{topic_id}:{partition}:", f":{group}"


def parse_workflow_id(value: str) -> tuple[str, str, str, int, int]:
    """Inverse of `workflow_id`: (group, topic, topic_id, partition, offset).

    Raises:
        ValueError: for any string `workflow_id` would never produce.
    """
    parts = value.split(":", 5)
    if len(parts) != 6 or parts[0] != "kafka":
        raise ValueError(f"{value!r} is not a Kafka workflow ID")
    _, topic, topic_id, partition, offset, group = parts
    if not (partition.isdigit() and offset.isdigit()):
        raise ValueError(f"{value!r} is not a Kafka workflow ID: bad partition or offset")
    parsed = (group, topic, topic_id, int(partition), int(offset))
    if workflow_id(*parsed) != value:  # also validates every field
        raise ValueError(f"{value!r} is not a Kafka workflow ID")
    return parsed
