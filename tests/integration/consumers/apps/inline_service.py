"""The inline flow as a consumer service: `onceflow run apps.inline_service:app`.

Engine settings come from ONCEFLOW_* variables; the test picks the rest, as for
apps.service: FLOW_TOPIC, FLOW_GROUP, FLOW_MAX_IN_FLIGHT, FLOW_BATCH_SIZE and
FLOW_SESSION_TIMEOUT_MS (how soon Kafka gives a killed member's partitions to
another).
"""

from __future__ import annotations

import os

from apps.inline_flow import subscribe_inline_flow
from consumers import KafkaApp
from engine import Engine

engine = Engine()
app = KafkaApp(engine, batch_size=int(os.environ.get("FLOW_BATCH_SIZE", "500")))
subscribe_inline_flow(
    app,
    topic=os.environ["FLOW_TOPIC"],
    group=os.environ["FLOW_GROUP"],
    max_in_flight=int(os.environ.get("FLOW_MAX_IN_FLIGHT", "64")),
    consumer_config={
        "session.timeout.ms": int(os.environ.get("FLOW_SESSION_TIMEOUT_MS", "6000")),
        "heartbeat.interval.ms": 500,
    },
)
