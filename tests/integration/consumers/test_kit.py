"""The test kit itself: the checker must see every way exactly-once can break, and
a service that cannot start must say so."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from consumers.testing import ConsumerService, ExactlyOnceCheck, produce


def add_workflow(
    conn: psycopg.Connection[object],
    wid: str,
    group: str,
    topic: str,
    position: tuple[int, int],
    status: str,
) -> None:
    conn.execute(
        "INSERT INTO onceflow.workflows (workflow_id, name, status, input, source_group,"
        " source_topic, source_partition, source_offset) VALUES (%s, 'w', %s, '{}', %s, %s, %s, %s)",
        (wid, status, group, topic, *position),
    )


def add_effect(conn: psycopg.Connection[object], wid: str, key: str, seq: int) -> None:
    conn.execute(
        'INSERT INTO public.effects (workflow_id, grp, key, seq, partition, "offset", executor)'
        " VALUES (%s, 'g', %s, %s, 0, 0, 'x')",
        (wid, key, seq),
    )


def test_the_check_reports_every_kind_of_violation(
    kafka_bootstrap: str,
    effects_url: str,
    topic_group: Callable[..., tuple[str, str]],
    make_check: Callable[..., ExactlyOnceCheck],
) -> None:
    topic, group = topic_group(partitions=2)
    produce(kafka_bootstrap, topic, [(None, b"x")] * 6, partition=0)
    produce(kafka_bootstrap, topic, [(None, b"x")] * 2, partition=1)
    with psycopg.connect(effects_url, autocommit=True) as conn:
        for wid, p, o, status in [
            ("a", 0, 0, "SUCCESS"),
            ("b1", 0, 1, "SUCCESS"),
            ("b2", 0, 1, "SUCCESS"),  # a second workflow for one record
            ("c", 0, 2, "PENDING"),
            ("d", 0, 3, "ERROR"),
            # (0, 4): no workflow at all
            ("f", 0, 5, "SUCCESS"),  # no effect
            ("g", 1, 0, "SUCCESS"),
            ("h", 1, 1, "SUCCESS"),
            ("z", 1, 9, "SUCCESS"),  # an offset the topic never had
        ]:
            add_workflow(conn, wid, group, topic, (p, o), status)
        add_workflow(conn, "other", "another-group", topic, (0, 4), "SUCCESS")  # not ours
        effects = [("a", "k", 1), ("a", "k", 1), ("b1", "k", 2), ("b2", "k", 3)]
        effects += [("g", "j", 5), ("h", "j", 4), ("z", "j", 6)]  # j: 4 after 5
        for wid, key, seq in effects:
            add_effect(conn, wid, key, seq)

    check = make_check(topic, group, expected=8)
    report = check.report()
    assert report.records == 8 and report.workflows == 9
    assert report.missing == [(0, 4)]
    assert report.duplicates == {(0, 1): 2}
    assert report.pending == [(0, 2)]
    assert report.not_success == {(0, 3): "ERROR"}
    assert report.unknown == [(1, 9)]
    assert report.effects_missing == ["f"]
    assert report.effects_duplicated == {"a": 2}
    assert report.order_violations == ["key 'k': 1 after 1", "key 'j': 4 after 5"]
    assert not report.complete
    with pytest.raises(AssertionError) as failed:
        check.assert_exactly_once(allow_errors=[(0, 3), (1, 0)])
    message = str(failed.value)
    for line in [
        "1 records without a workflow: (0, 4)",
        "1 records with several workflows: (0, 1): 2",
        "1 workflows still PENDING: (0, 2)",
        "1 expected ERROR workflows that are not: (1, 0)",
        "1 workflows for offsets not in the topic: (1, 9)",
        "1 successful workflows without their effect: f",
        "1 effects written more than once: a: 2",
        "2 per-key order violations",
    ]:
        assert line in message, message
    assert "workflows not SUCCESS" not in message  # (0, 3) was allowed
    with pytest.raises(AssertionError, match="the topic holds 8 records, 9 expected"):
        make_check(topic, group, expected=9).assert_exactly_once()


def test_a_service_that_cannot_start_says_why(tmp_path: Path) -> None:
    service = ConsumerService("no_such_module:app", log_path=tmp_path / "service.log")
    service.start()
    assert service.wait(60) == 2
    assert "cannot import 'no_such_module'" in service.output()
    with pytest.raises(AssertionError, match="exited"):
        service.wait_for_output("assigned", timeout=5)
    service.start()  # a second start appends to the same log
    service.wait(60)
    assert service.output(since_start=False).count("cannot import") == 2
    assert service.output().count("cannot import") == 1
