"""Ordering (DESIGN.md §5): same key in offset order, keys concurrent; or one at a
time per partition; or fully concurrent. The `work` step of the flow is counted by
a Probe while it sleeps, so the peaks show what overlapped."""

from __future__ import annotations

from collections.abc import Callable

from apps.flow import EFFECTS, Order, Probe, orders, subscribe_flow
from consumer_support import wait_complete

from consumers import KafkaApp
from consumers.testing import Effects, ExactlyOnceCheck, produce


def keyless(count: int, start: int) -> list[tuple[None, bytes]]:
    return [(None, Order(seq=i).model_dump_json().encode()) for i in range(start, start + count)]


def test_key_ordering_runs_each_key_in_order_and_keys_concurrently(
    kafka_bootstrap: str,
    topic_group: Callable[..., tuple[str, str]],
    make_app: Callable[..., KafkaApp],
    make_check: Callable[..., ExactlyOnceCheck],
) -> None:
    topic, group = topic_group(partitions=1)
    # Runs of one key in a row: were keys not serialised, a run's records would
    # start side by side.
    records = orders(120, keys=6, run=5) + keyless(12, start=120) + orders(60, keys=6, start=132)
    produce(kafka_bootstrap, topic, records)
    probe = Probe()
    app = make_app()
    subscribe_flow(
        app, topic=topic, group=group, ordering="key", max_in_flight=4, step_delay=0.02, probe=probe
    )
    app.start()
    check = make_check(topic, group, expected=len(records))
    wait_complete(check, app, timeout=90)
    # Effects (written in the step after `work`) keep each key's seq increasing,
    # keyless records included (they share their partition's lane).
    check.assert_exactly_once()
    lanes = {label: n for label, n in probe.peak.items() if isinstance(label, tuple)}
    key_lanes = {label: n for label, n in lanes.items() if label[0] in ("key", "keyless")}
    assert len(key_lanes) == 7, key_lanes  # six keys and the keyless lane
    assert all(n == 1 for n in key_lanes.values()), f"a key ran twice at once: {key_lanes}"
    # Different keys of the one partition did overlap, within max_in_flight.
    assert 1 < probe.peak[("partition", 0)] <= 4, probe.peak


def test_partition_ordering_runs_one_at_a_time_per_partition(
    kafka_bootstrap: str,
    effects_url: str,
    topic_group: Callable[..., tuple[str, str]],
    make_app: Callable[..., KafkaApp],
) -> None:
    topic, group = topic_group(partitions=2)
    records = orders(80, keys=16)
    produce(kafka_bootstrap, topic, records)
    probe = Probe()
    app = make_app()
    subscribe_flow(
        app, topic=topic, group=group, ordering="partition", step_delay=0.01, probe=probe
    )
    app.start()
    # Per partition, effects must follow offsets: "partition" is the key, "offset" the sequence.
    by_offset = Effects(
        f"public.{EFFECTS}", key_column="partition", seq_column="offset", order_column="id"
    )
    check = ExactlyOnceCheck(
        effects_url, kafka_bootstrap, topic=topic, group=group, expected=80, effects=by_offset
    )
    wait_complete(check, app, timeout=90)
    check.assert_exactly_once()
    assert probe.peak[("partition", 0)] == 1, probe.peak
    assert probe.peak[("partition", 1)] == 1, probe.peak


def test_no_ordering_runs_records_of_one_key_concurrently(
    kafka_bootstrap: str,
    effects_url: str,
    topic_group: Callable[..., tuple[str, str]],
    make_app: Callable[..., KafkaApp],
) -> None:
    topic, group = topic_group(partitions=1)
    records = orders(60, keys=1)  # one key, one partition: nothing forces an order
    produce(kafka_bootstrap, topic, records)
    probe = Probe()
    app = make_app()
    subscribe_flow(
        app,
        topic=topic,
        group=group,
        ordering="none",
        max_in_flight=8,
        step_delay=0.05,
        probe=probe,
    )
    app.start()
    check = ExactlyOnceCheck(
        effects_url,
        kafka_bootstrap,
        topic=topic,
        group=group,
        expected=60,
        effects=Effects(f"public.{EFFECTS}"),
    )
    wait_complete(check, app, timeout=90)
    check.assert_exactly_once()
    assert 1 < probe.peak[("key", 0, "k0")] <= 8, probe.peak
