"""GDMF parsing on Apple's real feed files, and the catalog's sync against hostile input."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from catalog.feeds import FeedError, parse_gdmf
from managed_os.versions import parse_version

FEEDS = Path(__file__).resolve().parents[1] / "data" / "feeds"


def load(name: str) -> bytes:
    return (FEEDS / name).read_bytes()


def latest(releases, major: int):
    updates = [r for r in releases if r.major == major and r.kind != "bsi"]
    return max(updates, key=lambda r: parse_version(r.version))


def test_the_latest_release_of_each_major_in_the_august_2026_feed():
    releases = parse_gdmf(load("gdmf_pmv_2026-08-22_sofa_cache.json"))
    assert {m: latest(releases, m).version for m in (26, 15, 14)} == {
        26: "26.6.2",
        15: "15.7.9",
        14: "14.8.9",
    }
    assert latest(releases, 26).build == "25G83"


def test_release_dates_come_from_asset_sets_not_the_rewritten_public_list():
    releases = {r.version: r for r in parse_gdmf(load("gdmf_pmv_2026-08-22_sofa_cache.json"))}
    # PublicAssetSets says 2026-08-17 for every entry; AssetSets keeps 14.8.9 at 2026-08-06.
    assert releases["14.8.9"].release_date == date(2026, 8, 6)
    assert releases["26.6.2"].release_date == date(2026, 8, 17)


def test_bsis_keep_their_prerequisite_build_and_extra():
    releases = parse_gdmf(load("gdmf_pmv_2026-04-12_raw.json"))
    bsis = {r.version: r for r in releases if r.kind == "bsi"}
    assert bsis["26.3.1"].build == "25D771280a"
    assert bsis["26.3.1"].prerequisite_build == "25D2128"
    assert bsis["26.3.1"].extra == "(a)"


def test_duplicate_version_build_entries_are_merged_with_the_union_of_devices():
    releases = parse_gdmf(load("gdmf_pmv_2026-04-12_raw.json"))
    same = [r for r in releases if (r.version, r.build) == ("26.3.1", "25D2128")]
    assert len(same) == 1
    assert "J700AP" in same[0].supported_devices
    assert len(same[0].supported_devices) > 60


def test_the_old_rapid_security_response_key_is_accepted_when_empty():
    releases = parse_gdmf(load("gdmf_pmv_2025-10-29_sofa_cache_rsr_key.json"))
    assert releases and not [r for r in releases if r.kind == "bsi"]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html><body>500 Internal Server Error</body></html>",
        b'{"PublicAssetSets": ',
        b"[]",
        b'{"AssetSets": {"macOS": "nope"}}',
        b'{"AssetSets": {"macOS": [{"ProductVersion": "x.y", "Build": "25A1"}]}}',
        b'{"AssetSets": {"macOS": [{"ProductVersion": "26.1", "Build": "25B1", '
        b'"PostingDate": "yesterday"}]}}',
        b'{"AssetSets": {"macOS": []}}',
    ],
)
def test_unusable_feed_bodies_raise_a_feed_error(body):
    with pytest.raises(FeedError):
        parse_gdmf(body)


def test_the_sync_api_reports_per_source_and_a_failure_leaves_releases_alone(tmp_path):
    from tests.support.apps import bearer, service_client

    good = tmp_path / "good.json"
    good.write_bytes(load("gdmf_pmv_2026-08-22_sofa_cache.json"))
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"<html>oops</html>")
    headers = bearer("catalog:write")
    over = {"sofa_url": ""}
    with service_client("catalog", tmp_path, gdmf_url=good.as_uri(), **over) as client:
        (first,) = client.post("/v1/sync?source=gdmf", headers=headers).json()["results"]
        assert first["ok"] and len(first["published"]) == 17
        (again,) = client.post("/v1/sync?source=gdmf", headers=headers).json()["results"]
        assert again["ok"] and not again["changed"]
        before = client.get("/v1/releases?limit=500", headers=headers).json()
    with service_client("catalog", tmp_path, gdmf_url=bad.as_uri(), **over) as client:
        (failed,) = client.post("/v1/sync?source=gdmf", headers=headers).json()["results"]
        after = client.get("/v1/releases?limit=500", headers=headers).json()
        sources = client.get("/v1/sources", headers=headers).json()["items"]
    assert failed["ok"] is False and "not JSON" in failed["error"]
    assert after == before
    (gdmf,) = [s for s in sources if s["name"] == "gdmf"]
    assert gdmf["ok"] is False and "not JSON" in gdmf["last_error"]
    assert gdmf["last_success"] is not None and gdmf["releases_listed"] == 17


def test_the_bundled_snapshot_is_the_real_august_2026_feed():
    from importlib import resources

    data = resources.files("catalog.data")
    bundled = data.joinpath("gdmf_snapshot.json").read_bytes()
    assert json.loads(bundled) == json.loads(load("gdmf_pmv_2026-08-22_sofa_cache.json"))
    sofa = data.joinpath("sofa_v2_snapshot.json").read_bytes()
    assert json.loads(sofa) == json.loads(load("sofa_v2_macos_data_feed.json"))
