"""An inline step's result skips its JSON check only when orjson is sure to
encode it (engine/_inline.py: `_always_encodable`)."""

from __future__ import annotations

import math

import orjson
import pytest

from engine._inline import _always_encodable


def _encodes(value: object) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:
        return False
    return True


@pytest.mark.parametrize(
    "value",
    [0, -1, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 1.5, math.nan, True, None],
)
def test_plain_values_are_skipped_exactly_when_orjson_encodes_them(value: object) -> None:
    assert _always_encodable(value) == _encodes(value)


@pytest.mark.parametrize("value", ["text", b"raw", [1], {"a": 1}, (1,)])
def test_anything_else_is_checked(value: object) -> None:
    assert not _always_encodable(value)
