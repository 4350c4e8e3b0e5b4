"""Test kit for Onceflow: real Postgres and Kafka for integration tests.

Onceflow's guarantees only mean something against the real services, so tests get
them from ``ONCEFLOW_TEST_DATABASE_URL`` / ``ONCEFLOW_TEST_KAFKA``, else from
testcontainers when a Docker engine answers, else from private native processes
(``python -m consumers.testing.services up``). Importing this package starts nothing.

For testing your own consumer service: run it as a real subprocess with
`ConsumerService` (kill it, freeze it, restart it), feed it with `produce`, and
check with `ExactlyOnceCheck`, which reads only Kafka and Postgres tables, that
every record ran exactly once. `postgres_url()` and `kafka_bootstrap()` find (or
start) the services to run them against.
"""

from ._check import Effects, ExactlyOnceCheck, Report
from ._consumer_service import ConsumerService
from ._kafka import committed_offsets, create_topic, produce, rewind_group, watermarks
from ._services import ServiceUnavailable, kafka_bootstrap, postgres_url

__all__ = [
    "ConsumerService",
    "Effects",
    "ExactlyOnceCheck",
    "Report",
    "ServiceUnavailable",
    "committed_offsets",
    "create_topic",
    "kafka_bootstrap",
    "postgres_url",
    "produce",
    "rewind_group",
    "watermarks",
]
