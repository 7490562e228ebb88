"""Strict readers for feed fields, shared by the GDMF and SOFA parsers. A value of the wrong
type or shape raises `FeedError`, so a malformed body is refused whole instead of leaking
odd values (a string iterated as a list, `None` turned into "None") into the catalog."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from catalog.feeds.errors import FeedError
from managed_os.versions import OSVersion, VersionError, normalize_extra, parse_build, parse_version

_BOARD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_,.\-]{0,63}")
_CVE = re.compile(r"CVE-\d{4}-\d{4,}")


def version(raw: Any, where: str) -> OSVersion:
    if not isinstance(raw, str):
        raise FeedError(f"{where}: version must be a string, not {type(raw).__name__}")
    try:
        return parse_version(raw)
    except VersionError as exc:
        raise FeedError(f"{where}: {exc}") from exc


def canonical(v: OSVersion) -> str:
    """One spelling per version, so feeds that write `26.0` and `26.0.0` agree."""
    return f"{v.major}.{v.minor}" + (f".{v.patch}" if v.patch else "")


def build(raw: Any, where: str) -> str:
    if not isinstance(raw, str):
        raise FeedError(f"{where}: build must be a string, not {type(raw).__name__}")
    try:
        return str(parse_build(raw))
    except VersionError as exc:
        raise FeedError(f"{where}: {exc}") from exc


def optional_build(raw: Any, where: str) -> str | None:
    return None if raw in (None, "") else build(raw, where)


def extra(raw: Any, where: str) -> str | None:
    """Apple's `(a)` spelling, or None."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise FeedError(f"{where}: extra must be a string, not {type(raw).__name__}")
    try:
        letter = normalize_extra(raw)
    except VersionError as exc:
        raise FeedError(f"{where}: {exc}") from exc
    return f"({letter})" if letter else None


def board_ids(raw: Any, where: str) -> list[str] | None:
    """A list of board ids, or None when absent."""
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(
        isinstance(d, str) and _BOARD_ID.fullmatch(d) for d in raw
    ):
        raise FeedError(f"{where}: SupportedDevices must be a list of board ids")
    return sorted(set(raw))


def cves(raw: Any, where: str) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(c, str) and _CVE.fullmatch(c) for c in raw):
        raise FeedError(f"{where}: expected a list of CVE ids")
    return sorted(set(raw))


def count(raw: Any, where: str) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise FeedError(f"{where}: expected a non-negative integer, not {raw!r}")
    return raw


def day(raw: Any, where: str = "date") -> date | None:
    """`2026-08-17` or `2026-08-17T00:00:00Z` (the date part); empty means unknown."""
    if raw in (None, ""):
        return None
    if not isinstance(raw, str):
        raise FeedError(f"{where}: a date must be a string, not {type(raw).__name__}")
    try:
        return date.fromisoformat(raw[:10])
    except ValueError as exc:
        raise FeedError(f"{where}: bad date {raw!r}") from exc


def https_url(raw: Any) -> str | None:
    return raw if isinstance(raw, str) and raw.startswith("https://") else None


def obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FeedError(f"{where} must be an object, not {type(value).__name__}")
    return value


def array(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise FeedError(f"{where} must be a list, not {type(value).__name__}")
    return value
