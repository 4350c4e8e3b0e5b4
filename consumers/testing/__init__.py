"""Test kit for Onceflow: real Postgres and Kafka for integration tests.

Onceflow's guarantees only mean something against the real services, so tests get
them from ``ONCEFLOW_TEST_DATABASE_URL`` / ``ONCEFLOW_TEST_KAFKA``, else from
testcontainers when a Docker engine answers, else from private native processes
(``python -m consumers.testing.services up``). Importing this package starts nothing.
"""
