"""The default execution, "auto" (consumers/_inline_policy.py), against real Kafka and Postgres.

A subscription that names no `execution` runs fresh records inline (on the
group's consumer thread, no step checkpoints: Engine's `inline_steps` is off)
while its handler is quick. STRIKES inline runs in a row over SLOW send it to
the worker threads (steps checkpointed, `onceflow-worker-N`) for COOL_OFF
seconds; an inline batch that fell back (a handler raised), for
COOL_OFF_AFTER_FALLBACK seconds. Exactly once and key order hold throughout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest
from apps.auto_flow import Runs, subscribe_auto_flow
from apps.flow import orders
from consumer_support import wait_complete, wait_until
from test_inline_execution import Row, assert_offset_order_per_key, fallbacks, workflow_rows

from consumers import KafkaApp
from consumers._inline_policy import (
    COOL_OFF,
    COOL_OFF_AFTER_FALLBACK,
    SLOW,
    STRIKES,
    BatchPolicy,
)
from consumers.testing import ExactlyOnceCheck, produce
from engine import NewWorkflow

WORKER = "onceflow-worker-"
COOLS_OFF = "runs on the worker threads for"


class Timings:
    """Every inline run the batch policies of the process were told about:
    (workflow name, seconds)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._lock = threading.Lock()
        self.runs: list[tuple[str, float]] = []
        ran = BatchPolicy.ran

        def spy(policy: BatchPolicy, item: NewWorkflow, seconds: float) -> None:
            with self._lock:
                self.runs.append((item.name, seconds))
            ran(policy, item, seconds)

        monkeypatch.setattr(BatchPolicy, "ran", spy)

    def slow(self) -> list[float]:
        return [round(s, 4) for _, s in self.runs if s > SLOW]


@pytest.fixture
def timings(monkeypatch: pytest.MonkeyPatch) -> Timings:
    return Timings(monkeypatch)


def cool_offs(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "onceflow.consumer" and r.getMessage().startswith(f"{name} {COOLS_OFF}")
    ]


def ran_inline(row: Row, runs: Runs, thread: str) -> bool:
    """Whether the row's record ran inline: once, on the consumer thread, no checkpoints."""
    return row.steps == 0 and runs.threads[row.seq] == [thread]


def ran_on_workers(row: Row, runs: Runs) -> bool:
    """Whether the row's record ran the workers way only: checkpointed steps, one
    run, on a worker thread."""
    ran = runs.threads[row.seq]
    return row.steps == 3 and len(ran) == 1 and ran[0].startswith(WORKER)


def test_a_quick_handler_runs_inline_by_default(
    kafka_bootstrap: str,
    effects_url: str,
    topic_group: Callable[..., tuple[str, str]],
    make_app: Callable[..., KafkaApp],
    make_check: Callable[..., ExactlyOnceCheck],
    caplog: pytest.LogCaptureFixture,
    timings: Timings,
) -> None:
    caplog.set_level(logging.INFO, logger="onceflow")
    topic, group = topic_group(partitions=3)
    total = 600
    produce(kafka_bootstrap, topic, orders(total // 2, keys=24))
    runs = Runs()
    app = make_app(batch_size=100)
    name = subscribe_auto_flow(app, topic=topic, group=group, runs=runs)
    (sub,) = app.subscriptions
    assert sub.execution == "auto"
    app.start()
    wait_until(lambda: app.stats().get("succeeded", 0) > 0, timeout=30, what="a first batch")
    produce(kafka_bootstrap, topic, orders(total // 2, keys=24, start=total // 2))

    check = make_check(topic, group, expected=total)
    wait_complete(check, app, timeout=60)
    report = check.assert_exactly_once()
    assert report.statuses == {"SUCCESS": total}
    assert assert_offset_order_per_key(effects_url) == 24

    rows = workflow_rows(effects_url, group)
    assert sorted(r.seq for r in rows) == list(range(total))
    assert all(r.effects == 1 for r in rows)
    assert set(runs.threads) == set(range(total))
    thread = f"onceflow-group-{group}"
    not_inline = [
        (r.seq, r.steps, runs.threads[r.seq]) for r in rows if not ran_inline(r, runs, thread)
    ]
    assert not not_inline, (
        f"{len(not_inline)} of {total} did not run inline: {not_inline[:5]}; "
        f"cool-offs {[r.getMessage() for r in cool_offs(caplog, name)]}, "
        f"inline runs over {SLOW}s: {timings.slow()[:20]}"
    )
    assert cool_offs(caplog, name) == []
    assert fallbacks(caplog) == []
    # The governor was told how long the runs took (all but the last of each batch).
    assert len(timings.runs) >= total // 2, len(timings.runs)
    assert {n for n, _ in timings.runs} == {name}
    stats = app.stats()
    assert stats["recorded"] == stats["consumed"] == stats["succeeded"] == total, stats
    assert stats["failed"] == stats["duplicates"] == stats["in_flight"] == 0, stats


def test_a_slow_handler_goes_to_the_workers_after_a_few_runs(
    kafka_bootstrap: str,
    effects_url: str,
    topic_group: Callable[..., tuple[str, str]],
    make_app: Callable[..., KafkaApp],
    make_check: Callable[..., ExactlyOnceCheck],
    caplog: pytest.LogCaptureFixture,
    timings: Timings,
) -> None:
    caplog.set_level(logging.INFO, logger="onceflow")
    topic, group = topic_group(partitions=2)
    total, keys = 300, 12
    produce(kafka_bootstrap, topic, orders(total, keys=keys))
    runs = Runs()
    app = make_app(batch_size=100)
    name = subscribe_auto_flow(app, topic=topic, group=group, delay=0.03, runs=runs)
    started = time.monotonic()
    app.start()

    check = make_check(topic, group, expected=total)
    wait_complete(check, app, timeout=60)
    elapsed = time.monotonic() - started
    assert elapsed < COOL_OFF / 2, f"took {elapsed:.1f}s: the cool-off may have ended meanwhile"
    report = check.assert_exactly_once()
    assert report.statuses == {"SUCCESS": total}
    assert assert_offset_order_per_key(effects_url) == keys

    rows = workflow_rows(effects_url, group)
    assert sorted(r.seq for r in rows) == list(range(total))
    assert all(r.effects == 1 for r in rows)
    thread = f"onceflow-group-{group}"
    inline = [r for r in rows if ran_inline(r, runs, thread)]
    workers = [r for r in rows if ran_on_workers(r, runs)]
    odd = [(r.seq, r.steps, runs.threads[r.seq]) for r in rows if r not in inline + workers]
    assert not odd, f"neither one inline run nor one workers run: {odd[:5]}"
    # The governor needs STRIKES measured inline runs over SLOW; then the
    # subscription stays on the workers for COOL_OFF seconds, longer than this test.
    assert STRIKES <= len(inline) <= 10, (
        f"{len(inline)} of {total} ran inline; inline runs measured: {timings.runs[:20]}"
    )
    assert len(workers) == total - len(inline)
    # Those that ran inline came first in their partitions: once cooled off,
    # nothing of the subscription ran inline again.
    for partition in {r.partition for r in rows}:
        mine = [r for r in rows if r.partition == partition]
        first_worker = next((i for i, r in enumerate(mine) if r in workers), len(mine))
        late = [r.seq for r in mine[first_worker:] if r in inline]
        assert not late, f"partition {partition}: ran inline after the cool-off began: {late}"

    (message,) = [r.getMessage() for r in cool_offs(caplog, name)]
    assert message.startswith(
        f"{name} runs on the worker threads for {COOL_OFF:.0f}s: "
        f"{STRIKES} runs in a row over {SLOW * 1000:.0f} ms (the last "
    ), message
    assert fallbacks(caplog) == []
    # The runs that sent it away were the first measured, each over SLOW.
    assert len(timings.runs) >= STRIKES
    assert all(n == name and s > SLOW for n, s in timings.runs[:STRIKES]), timings.runs[:10]
    wait_until(
        lambda: app.stats()["succeeded"] == total and app.stats()["in_flight"] == 0,
        timeout=10,
        what=f"the app's counters ({app.stats()})",
    )


def test_a_failing_batch_falls_back_and_cools_the_subscription_off(
    kafka_bootstrap: str,
    effects_url: str,
    topic_group: Callable[..., tuple[str, str]],
    make_app: Callable[..., KafkaApp],
    make_check: Callable[..., ExactlyOnceCheck],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="onceflow")
    topic, group = topic_group(partitions=2)
    first, fail_seq, retries, more = 200, 100, 2, 100
    produce(kafka_bootstrap, topic, orders(first, keys=8))
    runs = Runs()
    app = make_app(batch_size=50)
    name = subscribe_auto_flow(
        app, topic=topic, group=group, fail_seq=fail_seq, fail_retries=retries, runs=runs
    )
    app.start()
    wait_complete(make_check(topic, group, expected=first), app, timeout=60)

    # The failing record's batch fell back, and that cooled the subscription off.
    (fell_back,) = fallbacks(caplog)
    assert "step 'verify' raised Refused" in fell_back, fell_back
    (cooled,) = cool_offs(caplog, name)
    assert cooled.getMessage() == (
        f"{name} runs on the worker threads for {COOL_OFF_AFTER_FALLBACK:.0f}s: "
        "an inline batch fell back"
    )
    cooled_at = cooled.created

    # The failing record ended as the ordinary path puts it.
    rows = workflow_rows(effects_url, group)
    (failing,) = [r for r in rows if r.seq == fail_seq]
    status = app.engine.get_workflow(failing.workflow_id)
    assert status.status == "ERROR"
    assert status.error is not None and status.error["type"].endswith(".Refused"), status.error
    assert [s.name for s in app.engine.get_steps(failing.workflow_id)] == [
        "parse",
        "record_effect",
        "verify",
    ]
    assert runs.verified[fail_seq] == 1 + 1 + retries
    assert failing.effects == 1
    thread = f"onceflow-group-{group}"
    head, *rest = runs.threads[fail_seq]
    assert head == thread and len(rest) == 1 and rest[0].startswith(WORKER), runs.threads[fail_seq]

    # Records coming during the cool-off run on the workers, though their
    # lanes are empty (execution="inline" would run them inline).
    produce(kafka_bootstrap, topic, orders(more, keys=8, start=first))
    wait_complete(make_check(topic, group, expected=first + more), app, timeout=30)
    during = time.time() - cooled_at
    assert during < COOL_OFF_AFTER_FALLBACK - 1, (
        f"the second lot took until {during:.1f}s after the cool-off began: too slow to tell"
    )
    rows = workflow_rows(effects_url, group)
    second = [r for r in rows if first <= r.seq < first + more]
    assert len(second) == more
    not_workers = [
        (r.seq, r.steps, runs.threads[r.seq]) for r in second if not ran_on_workers(r, runs)
    ]
    assert not not_workers, f"ran inline while cooling off: {not_workers[:5]}"

    # Once the cool-off is over, records run inline again.
    time.sleep(max(0.0, cooled_at + COOL_OFF_AFTER_FALLBACK + 0.5 - time.time()))
    produce(kafka_bootstrap, topic, orders(more, keys=8, start=first + more))
    check = make_check(topic, group, expected=first + 2 * more)
    wait_complete(check, app, timeout=30)
    rows = workflow_rows(effects_url, group)
    third = [r for r in rows if r.seq >= first + more]
    assert len(third) == more
    not_inline = [
        (r.seq, r.steps, runs.threads[r.seq]) for r in third if not ran_inline(r, runs, thread)
    ]
    assert not not_inline, f"still on the workers after the cool-off: {not_inline[:5]}"
    assert len(cool_offs(caplog, name)) == 1

    # All of it exactly once, in key order; only the failing record in ERROR.
    report = check.assert_exactly_once(allow_errors=[(failing.partition, failing.offset)])
    assert report.statuses == {"SUCCESS": first + 2 * more - 1, "ERROR": 1}
    assert assert_offset_order_per_key(effects_url) == 8
    assert sorted(r.seq for r in rows) == list(range(first + 2 * more))


def test_a_slow_handler_fed_one_record_at_a_time_goes_to_the_workers(
    kafka_bootstrap: str,
    effects_url: str,
    topic_group: Callable[..., tuple[str, str]],
    make_app: Callable[..., KafkaApp],
    make_check: Callable[..., ExactlyOnceCheck],
    caplog: pytest.LogCaptureFixture,
    timings: Timings,
) -> None:
    """A quiet topic: each poll brings one record. The handler takes 30 ms, so
    by the documented rule ("runs inline until three runs in a row take over
    10 ms each") the fourth record on must run on the workers."""
    caplog.set_level(logging.INFO, logger="onceflow")
    topic, group = topic_group(partitions=1)
    total = 10
    runs = Runs()
    app = make_app(batch_size=100)
    name = subscribe_auto_flow(app, topic=topic, group=group, delay=0.03, runs=runs)
    app.start()

    def finished(count: int) -> Callable[[], bool]:
        return lambda: app.stats().get("succeeded", 0) == count

    for seq in range(total):
        # Each record produced once the one before finished: a poll batch of one.
        produce(kafka_bootstrap, topic, orders(1, keys=1, start=seq))
        wait_until(finished(seq + 1), timeout=30, what=f"record {seq} to finish")
    check = make_check(topic, group, expected=total)
    wait_complete(check, app, timeout=30)
    assert check.assert_exactly_once().statuses == {"SUCCESS": total}

    rows = workflow_rows(effects_url, group)
    assert sorted(r.seq for r in rows) == list(range(total))
    on_workers = [r.seq for r in rows if ran_on_workers(r, runs)]
    assert on_workers == list(range(STRIKES, total)), (
        f"ran on the workers: {on_workers} (threads {dict(runs.threads)}); "
        f"inline runs the governor was told of: {timings.runs}; "
        f"cool-offs: {[r.getMessage() for r in cool_offs(caplog, name)]}"
    )
