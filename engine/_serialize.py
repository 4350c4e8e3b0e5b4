"""JSON encoding of workflow inputs, step outputs and results.

orjson does the work (it is several times faster than the standard library,
and this is on the per-step path). A few Python types that plain JSON would
lose are tagged so that a replay hands user code the same types it got the
first time: pydantic models, bytes, tuples are kept as lists (JSON has no tuple).
An object whose class defines `__onceflow_json__(self)` is stored as what that
returns (and read back as that plain value).
"""

from __future__ import annotations

import base64
import importlib
import re
from typing import Any

import orjson
from pydantic import BaseModel

from ._errors import SerializationError

_MODEL = "__onceflow_model__"
_BYTES = "__onceflow_bytes__"


def _default(value: Any) -> Any:
    stored_as = getattr(type(value), "__onceflow_json__", None)
    if stored_as is not None:
        # An argument that stands for a JSON value (and may carry more for a
        # run in the same process): stored as that value, read back as it.
        return stored_as(value)
    if isinstance(value, BaseModel):
        cls = type(value)
        return {
            _MODEL: f"{cls.__module__}:{cls.__qualname__}",
            "data": value.model_dump(mode="json"),
        }
    if isinstance(value, bytes | bytearray | memoryview):
        return {_BYTES: base64.b64encode(bytes(value)).decode("ascii")}
    raise TypeError(type(value).__name__)


# A NUL character, escaped by the encoder as \u0000 (after an even number of
# backslashes, else the backslash itself was escaped): Postgres jsonb refuses it.
_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def dumps(value: Any, *, what: str = "value", name: str | None = None) -> str:
    """Encode `value` as JSON text; raise SerializationError naming `what`
    (and `name`, if given: the message is built only when it is needed) if
    it can't be."""
    try:
        text = orjson.dumps(value, default=_default, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError as exc:
        what = what if name is None else f"{what} {name!r}"
        raise SerializationError(
            f"{what} cannot be stored as JSON ({exc}); pass JSON-compatible values, "
            "pydantic models or bytes"
        ) from exc
    # Caught here, not by Postgres: there it would fail the whole batch of
    # checkpoints it is written with, other workflows' included.
    if "\\u0000" in text and _NUL.search(text):
        what = what if name is None else f"{what} {name!r}"
        raise SerializationError(
            f"{what} holds a NUL character (\\x00) in a string, which Postgres cannot store; "
            "remove it, or pass the data as bytes"
        )
    return text


def encode(value: Any) -> str | None:
    """`dumps(value)` when it succeeds and holds no escaped NUL at all; None
    otherwise (then `dumps` on its parts says what is wrong). One pass over
    a whole document, for the hot path."""
    try:
        data = orjson.dumps(value, default=_default, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return None
    return None if b"\\u0000" in data else data.decode()


def _revive(value: Any) -> Any:
    if isinstance(value, dict):
        if _BYTES in value and len(value) == 1:
            return base64.b64decode(value[_BYTES])
        if _MODEL in value and len(value) == 2:
            return _load_model(value[_MODEL]).model_validate(value["data"])
        return {k: _revive(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_revive(v) for v in value]
    return value


def _load_model(path: str) -> type[BaseModel]:
    module_name, _, qualname = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise SerializationError(
            f"stored data names the pydantic model {path}, which cannot be imported ({exc}); "
            "keep the class importable under that name, or move it with an alias there"
        ) from exc
    if not (isinstance(obj, type) and issubclass(obj, BaseModel)):
        raise SerializationError(f"{path} is not a pydantic model")
    return obj


def loads(data: bytes | str | None) -> Any:
    if data is None:
        return None
    return _revive(orjson.loads(data))


def revive(value: Any) -> Any:
    """Turn JSON already parsed (by the driver, from jsonb) back into Python values."""
    return _revive(value)
