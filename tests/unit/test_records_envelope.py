"""A consumed message as its Envelope (consumers/_records.py): what of the
record is kept, headers and timestamps included. The message is a stand-in
with confluent-kafka Message's accessors: this is the mapping alone."""

from __future__ import annotations

from typing import Any

import pytest

from consumers._records import envelope


class _Message:
    def __init__(self, headers: Any, timestamp: tuple[int, int] = (1, 1_700_000_000_123)) -> None:
        self._headers, self._timestamp = headers, timestamp

    def topic(self) -> str:
        return "orders"

    def partition(self) -> int:
        return 2

    def offset(self) -> int:
        return 41

    def key(self) -> bytes:
        return b"k-1"

    def value(self) -> bytes:
        return b'{"id": 1}'

    def timestamp(self) -> tuple[int, int]:
        return self._timestamp

    def headers(self) -> Any:
        return self._headers


@pytest.mark.parametrize("headers", [None, []])
def test_a_record_without_headers(headers: Any) -> None:
    env = envelope(_Message(headers))
    assert (env.topic, env.partition, env.offset, env.key, env.value) == (
        "orders",
        2,
        41,
        b"k-1",
        b'{"id": 1}',
    )
    assert env.headers == ()
    assert env.timestamp_ms == 1_700_000_000_123


def test_headers_keep_their_order_and_repeats_as_bytes() -> None:
    env = envelope(_Message([("trace", b"t-1"), ("kind", "text"), ("trace", None)]))
    assert env.headers == (("trace", b"t-1"), ("kind", b"text"), ("trace", None))


def test_headers_given_as_a_mapping() -> None:
    assert envelope(_Message({"a": b"1", "b": "2"})).headers == (("a", b"1"), ("b", b"2"))


def test_a_record_without_a_timestamp() -> None:
    assert envelope(_Message(None, timestamp=(0, -1))).timestamp_ms is None
