"""Parser for the SOFA macOS feed, v2 (preferred) and v1 (fallback).

Facts (reference notes, feeds.md §2): `OSVersions[]` holds per major a `Latest` release and
its `SecurityReleases` (newest first); v2 releases carry `Build`/`AllBuilds` only while GDMF
still lists them (often `""`/`[]`), a `SupportedDevices` list only when it is the release's
own (absent = "the major's"), and CVE details; v2 lists BSIs under the top-level
`BackgroundSecurityImprovements` keyed by major; `Devices` maps board id → model and name.
v1 has no builds on security releases, copies the major's device list onto each, and marks
the old RSRs with `ReleaseType` `RSR_<letter>`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from catalog.feeds.errors import FeedError
from catalog.feeds.gdmf import parse_date
from catalog.feeds.merge import Key, merge_into, release_order
from managed_os.events import ReleaseData
from managed_os.versions import (
    VersionError,
    major_name,
    normalize_extra,
    parse_build,
    parse_version,
)

_RSR = re.compile(r"RSR_([a-z])")


@dataclass(frozen=True)
class BoardDevice:
    board_id: str
    model_identifier: str | None
    marketing_name: str | None


@dataclass
class SofaFeed:
    schema: str  # "v2" or "v1"
    releases: list[ReleaseData]
    devices: list[BoardDevice] = field(default_factory=list)


def parse_sofa(body: bytes) -> SofaFeed:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FeedError(f"SOFA body is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("OSVersions"), list):
        raise FeedError("SOFA body has no OSVersions list")
    v2 = "BackgroundSecurityImprovements" in doc or "SchemaVersion" in doc
    source = "sofa" if v2 else "sofa-v1"
    merged: dict[Key, ReleaseData] = {}
    for i, entry in enumerate(doc["OSVersions"]):
        where = f"OSVersions[{i}]"
        entry = _obj(entry, where)
        latest = _obj(entry.get("Latest"), f"{where}.Latest")
        for rel in [latest, *_list(entry.get("SecurityReleases", []), f"{where}.SecurityReleases")]:
            for parsed in _releases(_obj(rel, where), own_devices=v2 or rel is latest, src=source):
                merge_into(merged, parsed)
    for major, bsis in _obj(doc.get("BackgroundSecurityImprovements", {}), "BSIs").items():
        for j, bsi in enumerate(_list(bsis, f"BackgroundSecurityImprovements.{major}")):
            merge_into(merged, _bsi(_obj(bsi, f"BackgroundSecurityImprovements.{major}[{j}]")))
    if not merged:
        raise FeedError("SOFA body lists no macOS releases")
    devices = [
        BoardDevice(str(board), _text(d.get("DeviceID")), _text(d.get("MarketingName")))
        for board, d in _obj(doc.get("Devices", {}), "Devices").items()
        if isinstance(d, dict)
    ]
    return SofaFeed("v2" if v2 else "v1", sorted(merged.values(), key=release_order), devices)


def _releases(rel: dict[str, Any], *, own_devices: bool, src: str) -> list[ReleaseData]:
    """One SOFA release object → one ReleaseData per known build (or one without a build)."""
    try:
        version = parse_version(str(rel["ProductVersion"]))
        rsr = _RSR.fullmatch(str(rel.get("ReleaseType", "")))
        builds = [str(parse_build(b)) for b in rel.get("AllBuilds") or [] if b]
        if not builds and rel.get("Build"):
            builds = [str(parse_build(str(rel["Build"])))]
        devices = rel.get("SupportedDevices") if own_devices else None
        if devices is not None and not isinstance(devices, list):
            raise FeedError("SupportedDevices must be a list")
        kind = "bsi" if rsr else ("major" if (version.minor, version.patch) == (0, 0) else "update")
        base = ReleaseData(
            version=str(version.base),
            extra=f"({rsr.group(1)})" if rsr else None,
            build=None,
            kind=kind,
            major=version.major,
            major_name=major_name(version.major),
            release_date=parse_date(rel.get("ReleaseDate")),
            expiration_date=parse_date(rel.get("ExpirationDate")),
            supported_devices=sorted({str(d) for d in devices or []}),
            devices_known=bool(devices),
            cves=_count(rel.get("UniqueCVEsCount")),
            exploited_cves=sorted({str(c) for c in rel.get("ActivelyExploitedCVEs") or []}),
            security_info=_url(rel.get("SecurityInfo")),
            sources=[src],
        )
    except (KeyError, TypeError, VersionError) as exc:
        raise FeedError(f"bad SOFA release {rel.get('ProductVersion')!r}: {exc}") from exc
    return [base.model_copy(update={"build": b}) for b in builds] or [base]


def _bsi(bsi: dict[str, Any]) -> ReleaseData:
    try:
        version = parse_version(str(bsi["Version"]))
        letter = normalize_extra(bsi.get("VersionExtra"))
        devices = bsi.get("SupportedDevices") or []
        if not isinstance(devices, list):
            raise FeedError("SupportedDevices must be a list")
        cves = bsi.get("CVEs") or []
        return ReleaseData(
            version=str(version.base),
            extra=f"({letter})" if letter else None,
            build=str(parse_build(str(bsi["Build"]))),
            prerequisite_build=str(parse_build(bsi["PrerequisiteBuild"]))
            if bsi.get("PrerequisiteBuild")
            else None,
            kind="bsi",
            major=version.major,
            major_name=major_name(version.major),
            release_date=parse_date(bsi.get("PostingDate")),
            supported_devices=sorted({str(d) for d in devices}),
            devices_known=bool(devices),
            cves=len(cves) if isinstance(cves, list) else None,
            security_info=_url(bsi.get("SecurityInfo")),
            sources=["sofa"],
        )
    except (KeyError, TypeError, VersionError) as exc:
        raise FeedError(f"bad SOFA BSI {bsi.get('Version')!r}: {exc}") from exc


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FeedError(f"{where} must be an object, not {type(value).__name__}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise FeedError(f"{where} must be a list, not {type(value).__name__}")
    return value


def _count(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FeedError(f"UniqueCVEsCount must be a non-negative integer, not {value!r}")
    return value


def _text(value: Any) -> str | None:
    return str(value) if value else None


def _url(value: Any) -> str | None:
    return str(value) if isinstance(value, str) and value.startswith("https://") else None
