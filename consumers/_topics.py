"""Topic metadata: each topic's ID (its incarnation) and partition count."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from confluent_kafka import KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient

from engine import ConfigurationError, DatabaseUnavailableError

log = logging.getLogger("onceflow.consumer")
T = TypeVar("T")

# Failures that pass once the service is back: Kafka unreachable (librdkafka
# reports transport errors and timeouts as KafkaException), Postgres away.
TRANSIENT = (KafkaException, TimeoutError, DatabaseUnavailableError)


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


def patiently(
    what: str,
    call: Callable[[], T],
    *,
    patience: float,
    stop: threading.Event | None = None,
) -> T:
    """`call()`, retried with backoff while it fails on a service that is
    down (TRANSIENT), for up to `patience` seconds (DESIGN.md §7: a service
    started during an outage waits for it rather than exiting). Errors that
    retrying cannot fix (an unknown topic, a bad setting) are raised at once,
    and so is the last transient one when patience runs out or `stop` is set."""
    deadline = time.monotonic() + patience
    delay = 0.5
    while True:
        try:
            return call()
        except ConfigurationError:
            raise
        except TRANSIENT as exc:
            left = deadline - time.monotonic()
            if left <= 0 or (stop is not None and stop.is_set()):
                raise
            log.warning("%s failed, retrying in %.1fs: %s", what, delay, exc)
            if stop is not None and stop.wait(min(delay, left)):
                raise
            if stop is None:
                time.sleep(min(delay, left))
            delay = min(5.0, delay * 2)
