"""JSON helpers shared by the DDM types: one canonical encoding, one strict decoder."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic_core import from_json

from managed_os.ddm.errors import DDMProtocolError

T = TypeVar("T")

_JSON_TYPE_NAMES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    bytes: "<data>",
}


def canonical_json(value: Any) -> bytes:
    """UTF-8 JSON with sorted keys and no whitespace; the input of every hash we compute.

    Raises `TypeError`/`ValueError` for values JSON cannot represent (NaN, datetimes, ...).
    """
    text = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")


def encode_json(value: Any) -> bytes:
    """Compact UTF-8 JSON for response bodies and command `Data` (keys keep their order)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def load_json_object(raw: bytes | str | Mapping[str, Any], what: str) -> dict[str, Any]:
    """Decode `raw` as a JSON object, or raise `DDMProtocolError` naming `what`."""
    if isinstance(raw, Mapping):
        return dict(raw)
    try:
        # Strict: NaN, Infinity, invalid UTF-8 and lone surrogates are refused (PostgreSQL
        # could store none of them); integers of any size are kept exact.
        value = from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        raise DDMProtocolError(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise DDMProtocolError(f"{what} must be a JSON object, not {type_name(value)}")
    return value


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    for cls, name in _JSON_TYPE_NAMES.items():
        if type(value) is cls:
            return name
    return type(value).__name__


def expect(value: Any, cls: type[T], where: str) -> T:
    """`value` if it is exactly of JSON type `cls` (a bool is not an integer), else raise."""
    if type(value) is not cls:
        expected = _JSON_TYPE_NAMES.get(cls, cls.__name__)
        raise DDMProtocolError(f"{where} must be {expected}, not {type_name(value)}")
    return value


def optional(data: Mapping[str, Any], key: str, cls: type[T], where: str) -> T | None:
    """`data[key]` checked with `expect`, or `None` when the key is absent (or null)."""
    value = data.get(key)
    return None if value is None else expect(value, cls, f"{where}.{key}" if where else key)
