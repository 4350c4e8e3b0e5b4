"""Workflow IDs of Kafka records: pure, injective, reversible (DESIGN.md §1.2, §9)."""

from __future__ import annotations

import itertools

import pytest

from consumers import parse_workflow_id, workflow_id

TOPIC_ID = "oJ5ZIfAIRkOk54wGyo66Iw"  # as Kafka prints a topic ID (URL-safe base64)
OTHER_ID = "AAAAAAAAAAAAAAAAAAAAAA=="


def test_same_record_same_id_and_the_format_is_stable() -> None:
    wid = workflow_id("orders-svc", "orders", TOPIC_ID, 3, 42)
    assert wid == workflow_id("orders-svc", "orders", TOPIC_ID, 3, 42)
    # Stored in Postgres: changing the format would re-run every redelivered record.
    assert wid == f"kafka:orders:{TOPIC_ID}:3:42:orders-svc"


GROUPS = ["g", "g:1", "g:1:2", ":", "::", "a b", "ü/ñ", "g:orders:x:0:0"]
TOPICS = ["t", "t.1", "t_1", "t-1", "orders"]
IDS = [TOPIC_ID, OTHER_ID, "x+y/z"]
NUMBERS = [0, 1, 10, 2**40]


def test_ids_are_injective_even_for_groups_holding_colons() -> None:
    seen: dict[str, tuple[str, str, str, int, int]] = {}
    for key in itertools.product(GROUPS, TOPICS, IDS, NUMBERS, NUMBERS):
        wid = workflow_id(*key)
        assert wid not in seen, f"{key} and {seen[wid]} share {wid}"
        seen[wid] = key


def test_parse_inverts_workflow_id() -> None:
    for key in itertools.product(GROUPS, TOPICS, IDS, NUMBERS, NUMBERS):
        assert parse_workflow_id(workflow_id(*key)) == key


def test_a_recreated_topic_gives_its_records_new_ids() -> None:
    # Same name, offsets restarting at 0: only the topic ID tells the records apart.
    assert workflow_id("g", "orders", TOPIC_ID, 0, 0) != workflow_id("g", "orders", OTHER_ID, 0, 0)


@pytest.mark.parametrize(
    ("group", "topic", "topic_id", "partition", "offset"),
    [
        ("", "t", TOPIC_ID, 0, 0),  # no group
        ("g", "", TOPIC_ID, 0, 0),  # no topic
        ("g", "a:b", TOPIC_ID, 0, 0),  # ":" would make IDs ambiguous
        ("g", "a b", TOPIC_ID, 0, 0),
        ("g", "t" * 250, TOPIC_ID, 0, 0),  # Kafka's limit is 249
        ("g", "t", "", 0, 0),
        ("g", "t", "ab:cd", 0, 0),
        ("g", "t", TOPIC_ID, -1, 0),
        ("g", "t", TOPIC_ID, 0, -1),
    ],
)
def test_bad_names_and_numbers_are_rejected(
    group: str, topic: str, topic_id: str, partition: int, offset: int
) -> None:
    with pytest.raises(ValueError):
        workflow_id(group, topic, topic_id, partition, offset)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "not-a-kafka-id",
        f"dbos:t:{TOPIC_ID}:0:0:g",  # another prefix
        f"kafka:t:{TOPIC_ID}:0:g",  # a field short
        f"kafka:t:{TOPIC_ID}:x:0:g",  # partition not a number
        f"kafka:t:{TOPIC_ID}:0:0.5:g",
        f"kafka:t:{TOPIC_ID}:0:-1:g",  # no record has a negative offset
        f"kafka:t:{TOPIC_ID}:0:0:",  # no group
        f"kafka:a b:{TOPIC_ID}:0:0:g",  # not a topic name
    ],
)
def test_parse_rejects_what_workflow_id_never_makes(value: str) -> None:
    with pytest.raises(ValueError):
        parse_workflow_id(value)
