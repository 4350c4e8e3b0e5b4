"""Bad input is parked, not dropped, and does not block its partition (DESIGN.md §4.2, §7)."""

from __future__ import annotations

import json
from collections.abc import Callable

import psycopg
from apps.flow import orders, subscribe_flow
from consumer_support import wait_complete

from consumers import KafkaApp
from consumers.testing import ExactlyOnceCheck, produce

BAD: list[tuple[str, bytes | None]] = [
    ("not json", b"not json at all"),
    ("not utf-8", b"\xff\xfe\x00garbage"),
    ("missing field", b'{"key": "k1"}'),
    ("wrong type", b'{"key": "k1", "seq": "seven"}'),
    ("no value", None),
]


def test_bad_records_become_error_workflows_with_raw_bytes_and_the_rest_runs(
    kafka_bootstrap: str,
    effects_url: str,
    topic_group: Callable[..., tuple[str, str]],
    make_app: Callable[..., KafkaApp],
    make_check: Callable[..., ExactlyOnceCheck],
) -> None:
    topic, group = topic_group(partitions=1)
    good_before, good_after = orders(3, keys=2), orders(20, keys=2, start=3)
    records = [*good_before, *((f"bad-{i}", raw) for i, (_, raw) in enumerate(BAD)), *good_after]
    produce(kafka_bootstrap, topic, records)
    app = make_app()
    subscribe_flow(app, topic=topic, group=group)
    app.start()
    check = make_check(topic, group, expected=len(records))
    wait_complete(check, app, timeout=60)
    bad_offsets = [(0, 3 + i) for i in range(len(BAD))]
    report = check.assert_exactly_once(allow_errors=bad_offsets)
    assert report.statuses == {"SUCCESS": len(records) - len(BAD), "ERROR": len(BAD)}
    assert app.stats()["bad_records"] == len(BAD)

    with psycopg.connect(effects_url) as conn:
        rows = conn.execute(
            "SELECT source_offset, workflow_id, error, (SELECT count(*) FROM onceflow.steps s"
            " WHERE s.workflow_id = w.workflow_id) FROM onceflow.workflows w"
            " WHERE status = 'ERROR' ORDER BY source_offset"
        ).fetchall()
    assert [r[0] for r in rows] == [o for _, o in bad_offsets]
    for (what, raw), (_, wid, error, steps) in zip(BAD, rows, strict=True):
        # The input holds the record as it came, to redrive or inspect it.
        value = app.engine.get_workflow(wid).input["args"][0]["value"]
        assert (value.encode() if isinstance(value, str) else value) == raw, what
        assert error["type"] == "BadRecord", (what, error)
        assert "Order" in error["message"], (what, error)
        assert steps == 0, f"{what}: the handler ran on a bad record"
    # The validation error itself is kept: which field, and why.
    missing = json.loads(rows[2][2]["detail"])
    assert [e["loc"] for e in missing] == [["seq"]] and missing[0]["type"] == "missing"
    wrong = json.loads(rows[3][2]["detail"])
    assert [e["loc"] for e in wrong] == [["seq"]] and wrong[0]["type"] == "int_parsing"
