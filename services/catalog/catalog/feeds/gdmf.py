"""Parsers for Apple's GDMF `/v2/pmv` body (raw, or wrapped by SOFA as {"etag", "data"}).

Facts (reference notes, feeds.md): `AssetSets` lists every still-signed build with a real
posting date; `PublicAssetSets` repeats the newest per major with a *rewritten* date, so its
date is never used; the BSI list is `PublicBackgroundSecurityImprovements` (formerly
`PublicRapidSecurityResponses`), possibly empty or absent. (version, build) repeats with
different device lists; duplicates are merged with the union of devices.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from catalog.feeds.errors import FeedError
from catalog.feeds.merge import merge_into, release_order
from managed_os.events import ReleaseData
from managed_os.versions import (
    VersionError,
    major_name,
    normalize_extra,
    parse_build,
    parse_version,
)

BSI_KEYS = ("PublicBackgroundSecurityImprovements", "PublicRapidSecurityResponses")


def parse_gdmf(body: bytes, platform: str = "macOS") -> list[ReleaseData]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FeedError(f"GDMF body is not JSON: {exc}") from exc
    if isinstance(doc, dict) and isinstance(doc.get("data"), dict) and "etag" in doc:
        doc = doc["data"]
    if not isinstance(doc, dict) or ("AssetSets" not in doc and "PublicAssetSets" not in doc):
        raise FeedError("GDMF body has neither AssetSets nor PublicAssetSets")
    merged: dict[tuple[str, str | None], ReleaseData] = {}
    for list_name, dated in (("AssetSets", True), ("PublicAssetSets", False)):
        for entry in _entries(doc, list_name, platform):
            merge_into(merged, _release(entry, dated=dated, bsi=False))
    for key in BSI_KEYS:
        for entry in _entries(doc, key, platform):
            merge_into(merged, _release(entry, dated=True, bsi=True))
    if not merged:
        raise FeedError(f"GDMF body lists no {platform} releases")
    return sorted(merged.values(), key=release_order)


def _entries(doc: dict[str, Any], list_name: str, platform: str) -> list[dict[str, Any]]:
    section = doc.get(list_name)
    if section is None:
        return []
    if not isinstance(section, dict):
        raise FeedError(f"{list_name} must be an object keyed by platform")
    entries = section.get(platform) or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise FeedError(f"{list_name}.{platform} must be a list of objects")
    return entries


def _release(entry: dict[str, Any], *, dated: bool, bsi: bool) -> ReleaseData:
    try:
        version = parse_version(str(entry["ProductVersion"]))
        build = parse_build(str(entry["Build"]))
        letter = normalize_extra(entry.get("ProductVersionExtra")) if bsi else None
        extra = f"({letter})" if letter else None
        prerequisite = entry.get("PrerequisiteBuild") if bsi else None
        devices = entry.get("SupportedDevices") or []
        if not isinstance(devices, list):
            raise FeedError("SupportedDevices must be a list")
        kind = "bsi" if bsi else ("major" if (version.minor, version.patch) == (0, 0) else "update")
        return ReleaseData(
            version=str(version.base),
            extra=extra,
            build=str(build),
            prerequisite_build=str(prerequisite) if prerequisite else None,
            kind=kind,
            major=version.major,
            major_name=major_name(version.major),
            release_date=parse_date(entry.get("PostingDate")) if dated else None,
            expiration_date=parse_date(entry.get("ExpirationDate")),
            supported_devices=sorted({str(d) for d in devices}),
            devices_known=True,
            sources=["gdmf"],
        )
    except (KeyError, VersionError, TypeError) as exc:
        raise FeedError(f"bad GDMF entry {entry.get('ProductVersion')!r}: {exc}") from exc


def parse_date(raw: Any) -> date | None:
    """`2026-08-17` or `2026-08-17T00:00:00Z` (the date part); empty means unknown."""
    if raw in (None, ""):
        return None
    try:
        return date.fromisoformat(str(raw)[:10])
    except ValueError as exc:
        raise FeedError(f"bad date {raw!r}") from exc
