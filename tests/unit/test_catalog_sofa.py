"""SOFA v2 and v1 parsing on the real feeds, and the merge with GDMF."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from catalog.feeds import FeedError, merge_sources, parse_gdmf, parse_sofa

FEEDS = Path(__file__).resolve().parents[1] / "data" / "feeds"
V2 = parse_sofa((FEEDS / "sofa_v2_macos_data_feed.json").read_bytes())
GDMF = parse_gdmf((FEEDS / "gdmf_pmv_2026-08-22_sofa_cache.json").read_bytes())


def find(rels, version, build=None, extra=None):
    return [
        r
        for r in rels
        if r.version == version and r.extra == extra and (build is None or r.build == build)
    ]


def test_the_v2_feed_gives_every_major_with_dates_and_cve_counts():
    assert V2.schema == "v2"
    assert {r.major for r in V2.releases} == {26, 15, 14, 13, 12}
    (latest,) = find(V2.releases, "26.6.2")
    assert (latest.build, latest.release_date, latest.cves) == ("25G83", date(2026, 8, 17), 28)
    assert latest.major_name == "Tahoe"
    (exploited,) = find(V2.releases, "26.6.1")
    assert exploited.exploited_cves == ["CVE-2026-65400"]


def test_releases_no_longer_signed_come_without_a_build_or_an_own_device_list():
    (old,) = find(V2.releases, "26.4")
    assert old.build is None and old.expiration_date is None
    assert old.supported_devices == [] and old.devices_known is False
    (zero,) = find(V2.releases, "26.0")
    assert zero.kind == "major" and zero.release_date == date(2025, 9, 15)


def test_the_v2_bsi_list_gives_builds_and_prerequisites():
    (universal,) = find(V2.releases, "26.3.1", extra="(a)")
    (device_specific,) = find(V2.releases, "26.3.2", extra="(a)")
    assert (universal.build, universal.prerequisite_build) == ("25D771280a", "25D2128")
    assert device_specific.supported_devices == ["J700AP"]
    assert universal.kind == device_specific.kind == "bsi"


def test_the_devices_map_resolves_board_ids_to_models():
    devices = {d.board_id: d for d in V2.devices}
    assert len(devices) == 100
    assert devices["J700AP"].model_identifier == "Mac17,5"
    assert devices["VMM-x86_64"].model_identifier is None


def test_the_v1_feed_is_read_as_a_fallback_with_its_rsrs():
    v1 = parse_sofa((FEEDS / "sofa_v1_macos_data_feed_2025-09-20_with_rsr.json").read_bytes())
    assert v1.schema == "v1"
    rsrs = sorted((r.version, r.extra) for r in v1.releases if r.kind == "bsi")
    assert rsrs == [("13.4.1", "(a)"), ("13.4.1", "(c)")]
    # v1 copies the major's device list onto every security release: not the release's own.
    (old,) = find(v1.releases, "13.4")
    assert old.devices_known is False


def test_merging_keeps_gdmf_devices_and_takes_the_earliest_date():
    merged = merge_sources(GDMF, V2.releases)
    (r265,) = find(merged, "26.5")
    assert r265.release_date == date(2026, 5, 11)  # SOFA; GDMF's AssetSets says 05-18
    assert len(r265.supported_devices) == 63 and r265.sources == ["gdmf", "sofa"]
    (r1489,) = find(merged, "14.8.9")
    assert r1489.release_date == date(2026, 8, 6)  # never PublicAssetSets' rewritten 08-17


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{}",
        b'{"OSVersions": "x"}',
        b'{"OSVersions": [{"Latest": "x"}]}',
        b'{"OSVersions": [{"Latest": {"ProductVersion": "banana"}}]}',
        b'{"OSVersions": [{"Latest": {"ProductVersion": "26.1", "UniqueCVEsCount": "lots"}}]}',
        b'{"OSVersions": [], "BackgroundSecurityImprovements": {"26": [{"Version": "26.1"}]}}',
        b'{"OSVersions": []}',
    ],
)
def test_unusable_sofa_bodies_raise_a_feed_error(body):
    with pytest.raises(FeedError):
        parse_sofa(body)


def _sofa_with(**latest) -> bytes:
    base = {"ProductVersion": "26.6.2", "Build": "25G83", "ReleaseDate": "2026-08-17T00:00:00Z"}
    return json.dumps(
        {"SchemaVersion": "x", "OSVersions": [{"Latest": {**base, **latest}}]}
    ).encode()


@pytest.mark.parametrize(
    "latest",
    [
        {"ActivelyExploitedCVEs": "CVE-2026-1"},
        {"ActivelyExploitedCVEs": [1, 2]},
        {"SupportedDevices": [{"a": 1}, None]},
        {"SupportedDevices": "J314sAP"},
        {"AllBuilds": "25G83"},
        {"AllBuilds": [["25G83"]]},
        {"ReleaseDate": 20260817},
        {"CVEs": ["CVE-2026-1"]},
    ],
)
def test_a_field_of_the_wrong_type_refuses_the_whole_sofa_body(latest):
    assert parse_sofa(_sofa_with())  # the base body is fine
    with pytest.raises(FeedError):
        parse_sofa(_sofa_with(**latest))


@pytest.mark.parametrize(
    "entry",
    [
        {"SupportedDevices": [{"a": 1}, None]},
        {"PrerequisiteBuild": ["x"]},
        {"ProductVersionExtra": 123},
        {"Build": 25},
        {"ProductVersion": 26.6},
    ],
)
def test_a_field_of_the_wrong_type_refuses_the_whole_gdmf_body(entry):
    good = {
        "ProductVersion": "26.3.1",
        "Build": "25D771280a",
        "ProductVersionExtra": "(a)",
        "PrerequisiteBuild": "25D2128",
        "PostingDate": "2026-03-17",
        "SupportedDevices": ["J314sAP"],
    }
    asset = {
        "ProductVersion": "26.3.1",
        "Build": "25D2128",
        "PostingDate": "2026-03-04",
        "SupportedDevices": ["J314sAP"],
    }

    def body(bsi: dict) -> bytes:
        return json.dumps(
            {
                "AssetSets": {"macOS": [asset]},
                "PublicBackgroundSecurityImprovements": {"macOS": [bsi]},
            }
        ).encode()

    assert parse_gdmf(body(good))
    with pytest.raises(FeedError):
        parse_gdmf(body({**good, **entry}))


def test_versions_spelled_with_or_without_a_zero_patch_are_one_release():
    a = parse_sofa(_sofa_with(ProductVersion="26.0.0", Build="25A354"))
    b = parse_sofa(_sofa_with(ProductVersion="26.0", Build="25A354"))
    assert a.releases[0].version == b.releases[0].version == "26.0"
