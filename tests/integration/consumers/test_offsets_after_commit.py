"""Offsets are committed only after the batch's Postgres commit (DESIGN.md §4, §9).

The service subprocess SIGKILLs itself at a fault point (consumers/_faults.py):
`after_record` dies between the Postgres commit and storing the offsets (the
lesson of DBOS issue 733), `before_record` between the poll and the Postgres
commit. Restarted without the fault, it must lose nothing and run nothing twice.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

import psycopg
import pytest
from apps.flow import orders

from consumers.testing import ConsumerService, ExactlyOnceCheck, committed_offsets, produce

RECORDS = 600


def recorded_offsets(database_url: str, group: str) -> dict[int, set[int]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT source_partition, source_offset FROM onceflow.workflows WHERE source_group = %s",
            (group,),
        ).fetchall()
    found: dict[int, set[int]] = {}
    for partition, offset in rows:
        found.setdefault(partition, set()).add(offset)
    return found


def assert_committed_only_recorded(
    database_url: str, bootstrap: str, topic: str, group: str
) -> tuple[dict[int, int | None], dict[int, set[int]]]:
    """Every offset below a committed offset must have its workflow in Postgres."""
    committed = committed_offsets(bootstrap, group, topic)
    recorded = recorded_offsets(database_url, group)
    for partition, offset in committed.items():
        lost = set(range(offset or 0)) - recorded.get(partition, set())
        assert not lost, (
            f"partition {partition}: offset {offset} committed, but offsets "
            f"{sorted(lost)[:10]} have no workflow: a restart would lose them"
        )
    return committed, recorded


@pytest.mark.parametrize(
    ("fault", "same_executor"),
    [("after_record:2", True), ("after_record:2", False), ("before_record:2", False)],
)
def test_crash_at_fault_point_loses_nothing_and_doubles_nothing(
    fault: str,
    same_executor: bool,
    kafka_bootstrap: str,
    effects_url: str,
    topic_group: Callable[..., tuple[str, str]],
    make_service: Callable[..., ConsumerService],
    make_check: Callable[..., ExactlyOnceCheck],
) -> None:
    topic, group = topic_group(partitions=2)
    produce(kafka_bootstrap, topic, orders(RECORDS, keys=12))
    executor = {"ONCEFLOW_EXECUTOR_ID": f"{group}-exec"} if same_executor else {}
    service = make_service(
        topic,
        group,
        ONCEFLOW_FAULT=fault,
        FLOW_STEP_DELAY="0.01",
        FLOW_BATCH_SIZE="100",
        **executor,
    )
    service.start()
    code = service.wait(60)
    assert code == -signal.SIGKILL, f"the fault did not fire ({code})\n{service.tail()}"

    committed, recorded = assert_committed_only_recorded(effects_url, kafka_bootstrap, topic, group)
    total = sum(len(offsets) for offsets in recorded.values())
    done = sum(offset or 0 for offset in committed.values())
    if fault.startswith("after_record"):
        # It died with a batch durable in Postgres whose offsets Kafka never got.
        assert total > done, f"{total} recorded, {done} committed: nothing was in between"
    else:
        # It died with a batch polled but not recorded: fewer rows than records.
        assert total < RECORDS

    service.env["ONCEFLOW_FAULT"] = None
    service.start()
    check = make_check(topic, group, expected=RECORDS)
    check.wait_until_complete(timeout=90, services=[service])
    report = check.assert_exactly_once()
    assert report.statuses == {"SUCCESS": RECORDS}
    service.stop()
