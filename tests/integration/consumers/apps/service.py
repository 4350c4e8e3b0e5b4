"""The flow as a consumer service: `onceflow run apps.service:app`.

Engine settings come from ONCEFLOW_* variables; the test picks the rest:
FLOW_TOPIC, FLOW_GROUP, FLOW_ORDERING, FLOW_STEP_DELAY, FLOW_MAX_IN_FLIGHT,
FLOW_BATCH_SIZE, and FLOW_SESSION_TIMEOUT_MS (how soon Kafka gives a killed
member's partitions to another).
"""

from __future__ import annotations

import os
from typing import cast

from apps.flow import subscribe_flow
from consumers import KafkaApp, Ordering
from engine import Engine

engine = Engine()
app = KafkaApp(engine, batch_size=int(os.environ.get("FLOW_BATCH_SIZE", "500")))
subscribe_flow(
    app,
    topic=os.environ["FLOW_TOPIC"],
    group=os.environ["FLOW_GROUP"],
    ordering=cast(Ordering, os.environ.get("FLOW_ORDERING", "key")),
    max_in_flight=int(os.environ.get("FLOW_MAX_IN_FLIGHT", "64")),
    step_delay=float(os.environ.get("FLOW_STEP_DELAY", "0")),
    consumer_config={
        "session.timeout.ms": int(os.environ.get("FLOW_SESSION_TIMEOUT_MS", "6000")),
        "heartbeat.interval.ms": 500,
    },
)
