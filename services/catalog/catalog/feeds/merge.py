"""Merging what the sources say about releases (pure).

Rules (DESIGN.md, Catalog): a release is keyed by (version, build); duplicates merge with the
union of their device lists; several builds of one version stay apart; the release date is
the earliest trusted date (AssetSets or SOFA, never PublicAssetSets); the expiry is the
latest seen (Apple extends it). GDMF is authoritative for builds and device lists; SOFA adds
dates, CVE counts and the releases GDMF no longer lists (often without a build).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from managed_os.events import ReleaseData
from managed_os.versions import OSVersion, parse_version

Key = tuple[str, str | None]


def key_of(rel: ReleaseData) -> Key:
    return (rel.version if not rel.extra else f"{rel.version} {rel.extra}", rel.build)


def release_order(rel: ReleaseData) -> tuple[OSVersion, str]:
    return (parse_version(rel.version, rel.extra), rel.build or "")


def _earliest(a: date | None, b: date | None) -> date | None:
    return min(a, b) if a and b else a or b


def _latest(a: date | None, b: date | None) -> date | None:
    return max(a, b) if a and b else a or b


def merge_release(old: ReleaseData, new: ReleaseData, *, devices: bool = True) -> ReleaseData:
    """The union of two views of the same release. With `devices=False` the device list of
    `new` is ignored (SOFA's lists are the whole major's, not the build's)."""
    take_devices = devices and new.devices_known
    return old.model_copy(
        update={
            "extra": old.extra or new.extra,
            "prerequisite_build": old.prerequisite_build or new.prerequisite_build,
            "major_name": old.major_name or new.major_name,
            "release_date": _earliest(old.release_date, new.release_date),
            "expiration_date": _latest(old.expiration_date, new.expiration_date),
            "supported_devices": sorted(
                {*old.supported_devices, *(new.supported_devices if take_devices else ())}
            ),
            "devices_known": old.devices_known or take_devices,
            "cves": new.cves if new.cves is not None else old.cves,
            "exploited_cves": sorted({*old.exploited_cves, *new.exploited_cves}),
            "security_info": new.security_info or old.security_info,
            "sources": sorted({*old.sources, *new.sources}),
        }
    )


def merge_into(into: dict[Key, ReleaseData], rel: ReleaseData) -> None:
    """Add one observation to a same-source index, merging a duplicate (version, build)."""
    key = key_of(rel)
    old = into.get(key)
    into[key] = rel if old is None else merge_release(old, rel)


def merge_sources(
    gdmf: Iterable[ReleaseData],
    sofa: Iterable[ReleaseData],
    stored: Iterable[ReleaseData] = (),
) -> list[ReleaseData]:
    """One list from both sources' last good observations.

    A SOFA release with builds enriches the GDMF entries of those builds; one without a build
    enriches every build of its version that GDMF lists or, once GDMF has dropped them, that
    the catalog already stores (`stored`), so an old version never turns into a second,
    build-less row. GDMF's device lists stand. What neither knows is taken from SOFA as is.
    """
    merged: dict[Key, ReleaseData] = {}
    for rel in gdmf:
        merge_into(merged, rel)
    known = {key_of(r): r for r in stored if r.build}
    by_version: dict[str, list[Key]] = {}
    for key in merged:
        by_version.setdefault(key[0], []).append(key)
    stored_by_version: dict[str, list[Key]] = {}
    for key in known:
        stored_by_version.setdefault(key[0], []).append(key)
    for rel in sofa:
        key = key_of(rel)
        if key in merged or (rel.build and key in known):
            targets = [key]
        elif rel.build:
            targets = []
        else:
            targets = by_version.get(key[0]) or stored_by_version.get(key[0], [])
        if not targets:
            merge_into(merged, rel)
            continue
        for target in targets:
            base = merged.get(target) or known[target]
            merged[target] = merge_release(base, rel, devices=False)
    return sorted(merged.values(), key=release_order)
