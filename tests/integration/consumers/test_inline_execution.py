"""Inline execution (`execution="inline"`, DESIGN.md §5) against real Kafka and Postgres.

Fresh records whose lane is empty run to completion in the consumer thread,
inside the transaction that records their poll batch; their rows are inserted
already SUCCESS and keep no step checkpoints (Engine's `inline_steps` is off),
so a workflow with no row in onceflow.steps ran inline, one with rows ran the
ordinary way. A handler that raises rolls its whole batch back, to the
ordinary (workers) way. Exactly once must hold throughout, crashes included.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from apps.flow import orders
from apps.inline_flow import Runs, subscribe_inline_flow
from consumer_support import Feeder, succeeded, wait_complete, wait_until
from test_offsets_after_commit import assert_committed_only_recorded

from consumers import KafkaApp
from consumers.testing import (
    ConsumerService,
    ExactlyOnceCheck,
    committed_offsets,
    produce,
    rewind_group,
)
from engine import NewWorkflow, PendingRecord

FALLBACK = "falls back to ordinary runs"


@dataclass(frozen=True)
class Row:
    """A workflow of the group, with what it left behind."""

    workflow_id: str
    partition: int
    offset: int
    status: str
    seq: int
    steps: int  # rows in onceflow.steps: none when it ran inline
    effects: int  # rows in public.effects


def workflow_rows(database_url: str, group: str) -> list[Row]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT w.workflow_id, w.source_partition, w.source_offset, w.status,"
            # The seq from the input, or, for a workflow that ran inline
            # (no input kept: Engine's inline_inputs is off), from its effect.
            " coalesce(((w.input #>> '{args,0,value}')::jsonb ->> 'seq')::int,"
            "  (SELECT min(e.seq) FROM public.effects e WHERE e.workflow_id = w.workflow_id)),"
            " (SELECT count(*) FROM onceflow.steps s WHERE s.workflow_id = w.workflow_id),"
            " (SELECT count(*) FROM public.effects e WHERE e.workflow_id = w.workflow_id)"
            " FROM onceflow.workflows w WHERE w.source_group = %s"
            " ORDER BY w.source_partition, w.source_offset",
            (group,),
        ).fetchall()
    return [Row(*r) for r in rows]


def effects_in_order(database_url: str) -> list[tuple[str, int, int]]:
    """(key, partition, offset) of every effect, in the order they were written."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute('SELECT key, partition, "offset" FROM public.effects ORDER BY id')
        return [(str(k), int(p), int(o)) for k, p, o in rows.fetchall()]


def assert_offset_order_per_key(database_url: str) -> int:
    """Each key's effects were written in offset order (a key lives on one
    partition); returns how many keys there were."""
    last: dict[str, tuple[int, int]] = {}
    for key, partition, offset in effects_in_order(database_url):
        if key in last:
            before = last[key]
            assert before[0] == partition, f"key {key} on partitions {before[0]} and {partition}"
            assert offset > before[1], f"key {key}: offset {offset} written after {before[1]}"
        last[key] = (partition, offset)
    return len(last)


def fallbacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if FALLBACK in r.getMessage()]


def test_inline_runs_every_record_once_in_key_order_on_the_consumer_thread(
    kafka_bootstrap: str,
    effects_url: str,
    topic_group: Callable[..., tuple[str, str]],
    make_app: Callable[..., KafkaApp],
    make_check: Callable[..., ExactlyOnceCheck],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="onceflow.engine")
    topic, group = topic_group(partitions=3)
    total = 1200
    produce(kafka_bootstrap, topic, orders(total // 2, keys=24))
    runs = Runs()
    app = make_app(batch_size=100)
    subscribe_inline_flow(app, topic=topic, group=group, runs=runs)
    app.start()
    # The second half comes while the service runs: batches of a live stream.
    wait_until(lambda: app.stats().get("succeeded", 0) > 0, timeout=30, what="a first batch")
    produce(kafka_bootstrap, topic, orders(total // 2, keys=24, start=total // 2))

    check = make_check(topic, group, expected=total)
    wait_complete(check, app, timeout=60)
    report = check.assert_exactly_once()  # one SUCCESS workflow and one effect each, seq order
    assert report.statuses == {"SUCCESS": total}
    assert assert_offset_order_per_key(effects_url) == 24

    rows = workflow_rows(effects_url, group)
    assert len(rows) == total and {r.partition for r in rows} == {0, 1, 2}
    assert sorted(r.seq for r in rows) == list(range(total))
    assert all(r.effects == 1 for r in rows)
    # Nothing sent a batch the ordinary way, so every record ran inline: no
    # step checkpoints, one run each, on the group's consumer thread.
    ordinary = [r for r in rows if r.steps]
    assert not ordinary, f"{len(ordinary)} of {total} ran the ordinary way: {ordinary[:3]}"
    thread = f"onceflow-group-{group}"
    not_inline = {seq: t for seq, t in runs.threads.items() if t != [thread]}
    assert not not_inline, f"runs off the consumer thread, or repeated: {not_inline}"
    assert set(runs.threads) == set(range(total))
    assert fallbacks(caplog) == []

    # Counted at record time, nothing left to workers.
    stats = app.stats()
    assert stats["recorded"] == stats["consumed"] == stats["succeeded"] == total, stats
    assert stats["failed"] == stats["duplicates"] == stats["in_flight"] == 0, stats


def test_a_failing_record_sends_its_batch_the_ordinary_way(
    kafka_bootstrap: str,
    effects_url: str,
    topic_group: Callable[..., tuple[str, str]],
    make_app: Callable[..., KafkaApp],
    make_check: Callable[..., ExactlyOnceCheck],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="onceflow.engine")
    topic, group = topic_group(partitions=2)
    total, fail_seq, retries = 400, 150, 2
    produce(kafka_bootstrap, topic, orders(total, keys=8))
    runs = Runs()
    app = make_app(batch_size=50)
    subscribe_inline_flow(
        app, topic=topic, group=group, fail_seq=fail_seq, fail_retries=retries, runs=runs
    )
    app.start()
    check = make_check(topic, group, expected=total)
    wait_complete(check, app, timeout=60)

    rows = workflow_rows(effects_url, group)
    assert sorted(r.seq for r in rows) == list(range(total))
    (failing,) = [r for r in rows if r.seq == fail_seq]
    # Every other record once, SUCCESS, its effect once, in key order; the
    # failing one in ERROR.
    report = check.assert_exactly_once(allow_errors=[(failing.partition, failing.offset)])
    assert report.statuses == {"SUCCESS": total - 1, "ERROR": 1}
    assert assert_offset_order_per_key(effects_url) == 8

    # The failing record ended as the ordinary path puts it: its step retried
    # `retries` times after the inline attempt (which has no retries), then the
    # workflow was recorded ERROR with the step's error checkpointed.
    status = app.engine.get_workflow(failing.workflow_id)
    assert status.status == "ERROR"
    assert status.error is not None and status.error["type"].endswith(".Refused"), status.error
    assert f"record {fail_seq} is refused" in status.error["message"]
    steps = app.engine.get_steps(failing.workflow_id)
    assert [s.name for s in steps] == ["parse", "record_effect", "verify"]
    assert steps[-1].error is not None and steps[-1].error["type"].endswith(".Refused")
    assert runs.verified[fail_seq] == 1 + 1 + retries
    # Its effect, written before it raised: the inline attempt's was rolled
    # back with the batch, the ordinary run's committed.
    assert failing.effects == 1
    thread = f"onceflow-group-{group}"
    first, *rest = runs.threads[fail_seq]
    assert first == thread and len(rest) == 1 and rest[0].startswith("onceflow-worker-"), (
        runs.threads[fail_seq]
    )

    # One batch fell back, on that step.
    (message,) = fallbacks(caplog)
    assert "step 'verify' raised Refused" in message, message

    # The others: no duplicate effect (check above). Those run inline ran
    # once, on the consumer thread; those that went the ordinary way ran last
    # on a worker, after at most one inline attempt rolled back.
    inline = [r for r in rows if r.steps == 0]
    ordinary = [r for r in rows if r.steps]
    assert failing in ordinary
    for r in inline:
        assert r.status == "SUCCESS" and runs.threads[r.seq] == [thread], (r, runs.threads[r.seq])
    for r in ordinary:
        ran = runs.threads[r.seq]
        assert ran[-1].startswith("onceflow-worker-") and ran[:-1] in ([], [thread]), (r, ran)
        if r is not failing:
            assert r.status == "SUCCESS" and r.steps == 3, r
    # Only the failing batch (and records queued behind it in their lanes)
    # left the inline path: most records still ran inline.
    assert len(inline) >= total // 2, f"only {len(inline)} of {total} ran inline"
    wait_until(
        lambda: app.stats()["failed"] == 1 and app.stats()["succeeded"] == total - 1,
        timeout=10,
        what=f"the app's counters ({app.stats()})",
    )


RECORDS = 600


@pytest.mark.parametrize("fault", ["after_record:3", "before_record:3"])
def test_an_inline_service_killed_at_a_fault_point_loses_nothing_and_doubles_nothing(
    fault: str,
    kafka_bootstrap: str,
    effects_url: str,
    topic_group: Callable[..., tuple[str, str]],
    make_service: Callable[..., ConsumerService],
    make_check: Callable[..., ExactlyOnceCheck],
) -> None:
    """The service SIGKILLs itself in its third batch: after the batch's inline
    transaction committed (rows SUCCESS, effects written) but before Kafka got
    its offsets, or before the batch was recorded. Restarted, it must redo
    nothing the commit holds and miss nothing it lacks."""
    topic, group = topic_group(partitions=2)
    produce(kafka_bootstrap, topic, orders(RECORDS, keys=12))
    service = make_service(topic, group, ONCEFLOW_FAULT=fault, FLOW_BATCH_SIZE="50")
    service.app = "apps.inline_service:app"  # the fixture's service, running the inline flow
    service.start()
    code = service.wait(60)
    assert code == -signal.SIGKILL, f"the fault did not fire ({code})\n{service.tail()}"

    committed, recorded = assert_committed_only_recorded(effects_url, kafka_bootstrap, topic, group)
    total = sum(len(offsets) for offsets in recorded.values())
    done = sum(offset or 0 for offset in committed.values())
    if fault.startswith("after_record"):
        assert total > done, f"{total} recorded, {done} committed: nothing was in between"
    else:
        assert 0 < total < RECORDS, total
    # What an inline batch made durable, it finished: every row SUCCESS with
    # its effect, none PENDING for the restart to pick up, no checkpoints.
    rows = workflow_rows(effects_url, group)
    assert len(rows) == total
    assert all(r.status == "SUCCESS" and r.effects == 1 and r.steps == 0 for r in rows), [
        r for r in rows if r.status != "SUCCESS" or r.effects != 1 or r.steps
    ][:5]

    service.env["ONCEFLOW_FAULT"] = None
    service.start()
    check = make_check(topic, group, expected=RECORDS)
    check.wait_until_complete(timeout=60, services=[service])
    report = check.assert_exactly_once()
    assert report.statuses == {"SUCCESS": RECORDS}
    assert assert_offset_order_per_key(effects_url) == 12
    assert service.stop() == 0, service.tail()
    final = committed_offsets(kafka_bootstrap, group, topic)
    assert sum(o or 0 for o in final.values()) == RECORDS, final


def test_an_inline_service_killed_mid_stream_restarts_and_runs_every_record_once(
    kafka_bootstrap: str,
    effects_url: str,
    topic_group: Callable[..., tuple[str, str]],
    make_service: Callable[..., ConsumerService],
    make_check: Callable[..., ExactlyOnceCheck],
) -> None:
    """SIGKILL from outside while records keep coming; restarted, it catches up."""
    topic, group = topic_group(partitions=2)
    service = make_service(topic, group, FLOW_BATCH_SIZE="50")
    service.app = "apps.inline_service:app"
    feeder = Feeder(kafka_bootstrap, topic, rate=150, keys=16)

    def progress(target: int) -> None:
        def done() -> bool:
            assert service.is_alive(), f"{service} died\n{service.tail()}"
            return succeeded(effects_url) >= target

        wait_until(done, timeout=30, pause=0.1, what=f"{target} completions")

    try:
        service.start()
        service.wait_for_output("assigned topic_")
        feeder.start()
        progress(250)
        assert service.kill() == -signal.SIGKILL
        at_kill, produced_at_kill = succeeded(effects_url), feeder.sent
        # Inline work is durable only finished: nothing PENDING, an effect
        # each, and (nothing having been redelivered yet) no checkpoints.
        rows = workflow_rows(effects_url, group)
        assert len(rows) >= at_kill >= 250
        assert all(r.status == "SUCCESS" and r.effects == 1 and r.steps == 0 for r in rows), [
            r for r in rows if r.status != "SUCCESS" or r.effects != 1 or r.steps
        ][:5]
        service.start()
        service.wait_for_output("assigned topic_")
        progress(at_kill + 250)
    finally:
        sent = feeder.stop()
    assert sent > produced_at_kill, "no record came after the kill"

    check = make_check(topic, group, expected=sent)
    check.wait_until_complete(timeout=60, services=[service])
    report = check.assert_exactly_once()
    assert report.statuses == {"SUCCESS": sent}
    assert assert_offset_order_per_key(effects_url) == 16
    assert service.stop() == 0, service.tail()


def test_fresh_records_behind_redelivered_finished_ones_of_their_key_still_run_inline(
    kafka_bootstrap: str,
    effects_url: str,
    topic_group: Callable[..., tuple[str, str]],
    make_app: Callable[..., KafkaApp],
    make_check: Callable[..., ExactlyOnceCheck],
) -> None:
    """A restart after a crash (or a rewind) redelivers records already done
    together with fresh ones of the same keys. The redelivered ones are final:
    their lanes hold nothing earlier, so the fresh ones behind them must still
    run inline (README, "Fast handlers"; consumers/_inline_policy.py)."""
    topic, group = topic_group(partitions=1)
    done, fresh = 200, 200
    produce(kafka_bootstrap, topic, orders(done, keys=4))
    first = make_app(batch_size=500)
    subscribe_inline_flow(first, topic=topic, group=group)
    first.start()
    wait_complete(make_check(topic, group, expected=done), first, timeout=60)
    first.stop()  # commits the offsets: the rewind below redelivers all of it
    finished = {r.workflow_id for r in workflow_rows(effects_url, group)}
    assert len(finished) == done
    rewind_group(kafka_bootstrap, group, topic, 0)
    produce(kafka_bootstrap, topic, orders(fresh, keys=4, start=done))

    runs = Runs()
    second = make_app(batch_size=500)
    subscribe_inline_flow(second, topic=topic, group=group, runs=runs)
    batches: list[list[str]] = []
    send_record = second.engine.send_record

    def spy(batch: Sequence[NewWorkflow], **options: Any) -> PendingRecord:
        batches.append([item.workflow_id for item in batch])
        return send_record(batch, **options)

    second.engine.send_record = spy  # type: ignore[method-assign]
    second.start()
    check = make_check(topic, group, expected=done + fresh)
    wait_complete(check, second, timeout=60)
    report = check.assert_exactly_once()
    assert report.statuses == {"SUCCESS": done + fresh}
    assert assert_offset_order_per_key(effects_url) == 4
    wait_until(
        lambda: second.stats()["duplicates"] == done,
        timeout=10,
        what="the redelivered records counted",
    )
    # The case under test happened: a poll batch held both.
    assert any(
        any(w in finished for w in b) and any(w not in finished for w in b) for b in batches
    ), [len(b) for b in batches]

    rows = [r for r in workflow_rows(effects_url, group) if r.workflow_id not in finished]
    assert sorted(r.seq for r in rows) == list(range(done, done + fresh))
    ordinary = [r.seq for r in rows if r.steps]
    assert not ordinary, (
        f"{len(ordinary)} of {fresh} fresh records ran the ordinary way (steps "
        f"checkpointed, run on workers: {runs.threads[ordinary[0]]}), though only "
        f"finished records of their keys came before them: seqs {ordinary[:10]}"
    )
    thread = f"onceflow-group-{group}"
    assert all(runs.threads[r.seq] == [thread] for r in rows)
