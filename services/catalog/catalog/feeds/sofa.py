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

from catalog.feeds import fields as f
from catalog.feeds.errors import FeedError
from catalog.feeds.merge import Key, merge_into, release_order
from managed_os.events import ReleaseData
from managed_os.versions import major_name

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
    merged: dict[Key, ReleaseData] = {}
    for i, entry in enumerate(doc["OSVersions"]):
        where = f"OSVersions[{i}]"
        entry = f.obj(entry, where)
        latest = f.obj(entry.get("Latest"), f"{where}.Latest")
        others = f.array(entry.get("SecurityReleases", []), f"{where}.SecurityReleases")
        for n, rel in enumerate([latest, *others]):
            # v1 copies the major's list onto every security release: only Latest's is real.
            own = v2 or n == 0
            for parsed in _releases(f.obj(rel, f"{where} release {n}"), own_devices=own):
                merge_into(merged, parsed)
    bsis = f.obj(doc.get("BackgroundSecurityImprovements", {}), "BackgroundSecurityImprovements")
    for major, entries in bsis.items():
        for j, bsi in enumerate(f.array(entries, f"BackgroundSecurityImprovements.{major}")):
            merge_into(merged, _bsi(f.obj(bsi, f"BackgroundSecurityImprovements.{major}[{j}]")))
    if not merged:
        raise FeedError("SOFA body lists no macOS releases")
    return SofaFeed("v2" if v2 else "v1", sorted(merged.values(), key=release_order), _devices(doc))


def _devices(doc: dict[str, Any]) -> list[BoardDevice]:
    devices = []
    for board, d in f.obj(doc.get("Devices", {}), "Devices").items():
        d = f.obj(d, f"Devices.{board}")
        model, name = d.get("DeviceID"), d.get("MarketingName")
        if not all(v is None or isinstance(v, str) for v in (model, name)):
            raise FeedError(f"Devices.{board}: DeviceID and MarketingName must be strings")
        devices.append(BoardDevice(str(board), model or None, name or None))
    return devices


def _releases(rel: dict[str, Any], *, own_devices: bool) -> list[ReleaseData]:
    """One SOFA release object → one ReleaseData per known build (or one without a build)."""
    where = f"SOFA release {rel.get('ProductVersion')!r}"
    v = f.version(rel.get("ProductVersion"), where)
    release_type = rel.get("ReleaseType", "")
    rsr = _RSR.fullmatch(release_type) if isinstance(release_type, str) else None
    builds = [f.build(b, where) for b in f.array(rel.get("AllBuilds") or [], where) if b]
    if not builds and rel.get("Build"):
        builds = [f.build(rel["Build"], where)]
    devices = f.board_ids(rel.get("SupportedDevices"), where) if own_devices else None
    if isinstance(rel.get("CVEs"), list):
        raise FeedError(f"{where}: CVEs must be an object keyed by CVE id")
    base = ReleaseData(
        version=f.canonical(v),
        extra=f"({rsr.group(1)})" if rsr else None,
        build=None,
        kind="bsi" if rsr else ("major" if (v.minor, v.patch) == (0, 0) else "update"),
        major=v.major,
        major_name=major_name(v.major),
        release_date=f.day(rel.get("ReleaseDate"), where),
        expiration_date=f.day(rel.get("ExpirationDate"), where),
        supported_devices=devices or [],
        devices_known=bool(devices),
        cves=f.count(rel.get("UniqueCVEsCount"), f"{where}.UniqueCVEsCount"),
        exploited_cves=f.cves(rel.get("ActivelyExploitedCVEs"), f"{where}.ActivelyExploitedCVEs"),
        security_info=f.https_url(rel.get("SecurityInfo")),
        sources=["sofa"],
    )
    return [base.model_copy(update={"build": b}) for b in builds] or [base]


def _bsi(bsi: dict[str, Any]) -> ReleaseData:
    where = f"SOFA BSI {bsi.get('Version')!r}"
    v = f.version(bsi.get("Version"), where)
    devices = f.board_ids(bsi.get("SupportedDevices"), where)
    listed_cves = f.cves(bsi.get("CVEs"), f"{where}.CVEs")
    return ReleaseData(
        version=f.canonical(v),
        extra=f.extra(bsi.get("VersionExtra"), where),
        build=f.build(bsi.get("Build"), where),
        prerequisite_build=f.optional_build(bsi.get("PrerequisiteBuild"), where),
        kind="bsi",
        major=v.major,
        major_name=major_name(v.major),
        release_date=f.day(bsi.get("PostingDate"), where),
        supported_devices=devices or [],
        devices_known=bool(devices),
        cves=len(listed_cves),
        security_info=f.https_url(bsi.get("SecurityInfo")),
        sources=["sofa"],
    )
