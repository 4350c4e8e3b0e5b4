"""Topic metadata: each topic's ID (its incarnation) and partition count."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient

from engine import ConfigurationError


class UnknownTopicError(ConfigurationError):
    def __init__(self, topic: str, bootstrap: str) -> None:
        super().__init__(
            f"topic {topic!r} does not exist on {bootstrap}: create it "
            f"(kafka-topics.sh --create --topic {topic} …) or fix the name in subscribe()"
        )
        self.topic = topic


def describe_topics(
    conf: dict[str, Any], topics: list[str], timeout: float = 15.0
) -> dict[str, tuple[str, int]]:
    """(topic ID, partition count) for each topic; UnknownTopicError if one is missing."""
    admin = AdminClient({k: v for k, v in conf.items() if not k.startswith("on_")})
    futures = admin.describe_topics(TopicCollection(topics), request_timeout=timeout)
    found: dict[str, tuple[str, int]] = {}
    for topic, fut in futures.items():
        try:
            desc = fut.result(timeout)
        except KafkaException as exc:
            err = exc.args[0]
            if getattr(err, "name", lambda: "")() == "UNKNOWN_TOPIC_OR_PART":
                raise UnknownTopicError(topic, conf.get("bootstrap.servers", "?")) from None
            raise
        found[topic] = (str(desc.topic_id), len(desc.partitions))
    return found
