"""Parsers for Apple's GDMF `/v2/pmv` body (raw, or wrapped by SOFA as {"etag", "data"}).

Facts (reference notes, feeds.md): `AssetSets` lists every still-signed build with a real
posting date; `PublicAssetSets` repeats the newest per major with a *rewritten* date, so its
date is never used; the BSI list is `PublicBackgroundSecurityImprovements` (formerly
`PublicRapidSecurityResponses`), possibly empty or absent. (version, build) repeats with
different device lists; duplicates are merged with the union of devices.
"""

from __future__ import annotations

import json
from typing import Any

from catalog.feeds import fields as f
from catalog.feeds.errors import FeedError
from catalog.feeds.merge import merge_into, release_order
from managed_os.events import ReleaseData
from managed_os.versions import major_name

BSI_KEYS = ("PublicBackgroundSecurityImprovements", "PublicRapidSecurityResponses")


def parse_gdmf(body: bytes, platform: str = "macOS") -> list[ReleaseData]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FeedError(f"GDMF body is not JSON: {exc}") from exc
    if isinstance(doc, dict) and isinstance(doc.get("data"), dict) and "etag" in doc:
        doc = doc["data"]
    if not isinstance(doc, dict) or not isinstance(doc.get("AssetSets"), dict):
        raise FeedError("GDMF body has no AssetSets object")
    if not _entries(doc, "AssetSets", platform):
        # AssetSets lists every build still signed; without it the body cannot be trusted to
        # say what is current (a stub with one PublicAssetSets entry would expire everything).
        raise FeedError(f"GDMF body lists no {platform} entries in AssetSets")
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
    where = f"GDMF entry {entry.get('ProductVersion')!r}/{entry.get('Build')!r}"
    v = f.version(entry.get("ProductVersion"), where)
    devices = f.board_ids(entry.get("SupportedDevices"), where)
    return ReleaseData(
        version=f.canonical(v),
        extra=f.extra(entry.get("ProductVersionExtra"), where) if bsi else None,
        build=f.build(entry.get("Build"), where),
        prerequisite_build=f.optional_build(entry.get("PrerequisiteBuild"), where) if bsi else None,
        kind="bsi" if bsi else ("major" if (v.minor, v.patch) == (0, 0) else "update"),
        major=v.major,
        major_name=major_name(v.major),
        release_date=f.day(entry.get("PostingDate"), where) if dated else None,
        expiration_date=f.day(entry.get("ExpirationDate"), where),
        supported_devices=devices or [],
        devices_known=devices is not None,
        sources=["gdmf"],
    )
