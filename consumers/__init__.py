"""Onceflow's Kafka side: subscribed handlers, exactly-once ingestion, the service.

Builds on `engine` (never the reverse): each Kafka record becomes one durable
workflow whose ID is `workflow_id(group, topic, topic_id, partition, offset)`.
"""

from ._app import KafkaApp
from ._config import KafkaSettings
from ._event import Event
from ._ids import parse_workflow_id, workflow_id
from ._scheduler import Ordering
from ._subscription import Execution
from ._topics import UnknownTopicError

__all__ = [
    "Event",
    "Execution",
    "KafkaApp",
    "KafkaSettings",
    "Ordering",
    "UnknownTopicError",
    "parse_workflow_id",
    "workflow_id",
]
