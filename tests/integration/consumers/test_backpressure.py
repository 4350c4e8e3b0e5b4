"""Backpressure (DESIGN.md §5, §9; DBOS issue 760): under a backlog of 100,000
records, in-flight work stays within max_in_flight, records held in memory stay
within max_buffered per partition (partitions are paused, then resumed), and the
process's memory stays flat."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil  # type: ignore[import-untyped]
import pytest
from apps.flow import Probe, orders, subscribe_flow
from consumer_support import wait_until

from consumers import KafkaApp
from consumers.testing import ExactlyOnceCheck, produce

BACKLOG = 100_000
ENOUGH = 20_000  # completions observed before stopping: the limits hold by then
PARTITIONS = 4
MAX_IN_FLIGHT = 32
MAX_BUFFERED = 250
BATCH = 100
RSS_GROWTH_LIMIT = 300 * 2**20


@dataclass
class Samples:
    in_flight: int = 0
    buffered: int = 0
    ahead: int = 0  # consumed but not finished: what the process holds
    rss: int = 0
    count: int = 0
    errors: list[BaseException] = field(default_factory=list)


def sample(app: KafkaApp, stop: threading.Event, into: Samples) -> None:
    process = psutil.Process()
    while not stop.wait(0.02):
        try:
            stats = app.stats()
            into.in_flight = max(into.in_flight, stats.get("in_flight", 0))
            into.buffered = max(into.buffered, stats.get("buffered", 0))
            done = stats.get("succeeded", 0) + stats.get("failed", 0)
            into.ahead = max(into.ahead, stats.get("consumed", 0) - done)
            into.rss = max(into.rss, process.memory_info().rss)
            into.count += 1
        except BaseException as exc:  # reported by the test, not lost in a thread
            into.errors.append(exc)
            return


@pytest.mark.slow
def test_backlog_is_consumed_with_bounded_work_and_memory(
    kafka_bootstrap: str,
    topic_group: Callable[..., tuple[str, str]],
    make_app: Callable[..., KafkaApp],
    make_check: Callable[..., ExactlyOnceCheck],
) -> None:
    topic, group = topic_group(partitions=PARTITIONS)
    assert produce(kafka_bootstrap, topic, orders(BACKLOG, keys=1000, start=0)) == BACKLOG
    probe = Probe()
    app = make_app(batch_size=BATCH, workers=64)
    subscribe_flow(
        app,
        topic=topic,
        group=group,
        max_in_flight=MAX_IN_FLIGHT,
        max_buffered=MAX_BUFFERED,
        step_delay=0.002,
        probe=probe,
        # The worker threads' bounds are under test (inline runs hold none).
        execution="workers",
    )
    samples = Samples(rss=psutil.Process().memory_info().rss)
    baseline = samples.rss
    stop = threading.Event()
    sampler = threading.Thread(target=sample, args=(app, stop, samples), daemon=True)
    app.start()
    sampler.start()
    try:
        wait_until(
            lambda: app.stats().get("succeeded", 0) >= ENOUGH,
            timeout=240,
            pause=0.2,
            what=f"{ENOUGH} completions (stats: {app.stats()})",
        )
    finally:
        stop.set()
        sampler.join(5)
    stats = app.stats()
    app.stop()
    assert not samples.errors, samples.errors
    assert samples.count > 100, "too few samples to say anything"

    # Work in flight: never above the limit, and the limit was reached (the backlog
    # offered more), so the bound is what held it.
    assert samples.in_flight == MAX_IN_FLIGHT, samples
    assert probe.peak["all"] <= MAX_IN_FLIGHT, probe.peak["all"]
    # Records held: per partition at most max_buffered before the pause, plus what
    # one batch can add; the partitions were paused, or the whole backlog would have
    # been read ahead by now...
    bound = PARTITIONS * (MAX_BUFFERED + BATCH)
    assert samples.buffered <= bound, samples
    assert samples.ahead <= bound, samples
    assert stats["consumed"] <= stats["succeeded"] + bound, stats
    # ...and resumed: far more completed than ever fit in the buffers.
    assert stats["succeeded"] >= ENOUGH > 10 * bound
    growth = samples.rss - baseline
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew by {growth / 2**20:.0f} MiB"

    report = make_check(topic, group).report()
    assert not report.duplicates and not report.effects_duplicated, report.summary()
    assert report.statuses["SUCCESS"] >= ENOUGH, report.summary()
