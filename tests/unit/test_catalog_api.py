"""Catalog REST API on real feed data: majors, latest per device with its BSI, filters,
pagination, expiry and the board-device map."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from managed_os.clock import FixedClock
from tests.support.apps import bearer, service_client

FEEDS = Path(__file__).resolve().parents[1] / "data" / "feeds"
R = bearer("catalog:read")
W = bearer("catalog:write")


def march_2026_gdmf(tmp_path: Path) -> Path:
    """The April 2026 GDMF body without 26.4.x: the week BSIs applied to the latest release."""
    doc = json.loads((FEEDS / "gdmf_pmv_2026-04-12_raw.json").read_bytes())
    for section in ("AssetSets", "PublicAssetSets"):
        doc[section]["macOS"] = [
            e for e in doc[section]["macOS"] if not e["ProductVersion"].startswith("26.4")
        ]
    path = tmp_path / "march.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def august(tmp_path):
    clock = FixedClock(datetime(2026, 8, 25, tzinfo=UTC))
    with service_client(
        "catalog",
        tmp_path,
        clock=clock,
        gdmf_url="bundled:gdmf_snapshot.json",
        sofa_url="bundled:sofa_v2_snapshot.json",
    ) as client:
        assert client.post("/v1/sync", headers=W).status_code == 200
        yield client, clock


def test_majors_list_each_with_its_latest_release(august):
    client, _ = august
    majors = client.get("/v1/majors", headers=R).json()["items"]
    latest = {m["major"]: (m["name"], m["latest"]["version"]) for m in majors}
    assert latest[26] == ("Tahoe", "26.6.2")
    assert latest[15] == ("Sequoia", "15.7.9")
    assert latest[11] == ("Big Sur", "11.7.11")  # GDMF lists it though SOFA does not


def test_the_latest_for_a_device_and_the_bsi_on_top_of_it(tmp_path):
    with service_client(
        "catalog", tmp_path, gdmf_url=march_2026_gdmf(tmp_path).as_uri(), sofa_url=""
    ) as client:
        client.post("/v1/sync", headers=W)
        most = client.get("/v1/majors/26/latest?device_id=J314sAP", headers=R).json()
        neo = client.get("/v1/majors/26/latest?device_id=J700AP", headers=R).json()
        unknown = client.get("/v1/majors/26/latest?device_id=Mac-NOPE", headers=R)
    assert (most["latest"]["version"], most["latest"]["build"]) == ("26.3.1", "25D2128")
    assert (most["bsi"]["build"], most["bsi"]["extra"]) == ("25D771280a", "(a)")
    assert (neo["latest"]["version"], neo["bsi"]["build"]) == ("26.3.2", "25D771400a")
    assert unknown.status_code == 404


def test_filters_by_kind_device_and_date_with_pagination(august):
    client, _ = august
    bsis = client.get("/v1/releases?kind=bsi", headers=R).json()
    assert {r["build"] for r in bsis["items"]} == {"25D771280a", "25D771400a"}
    neo = client.get("/v1/releases?major=26&device_id=J700AP", headers=R).json()["items"]
    assert "25D771400a" in {r["build"] for r in neo}
    recent = client.get("/v1/releases?since=2026-08-01", headers=R).json()["items"]
    assert {r["version"] for r in recent} == {"26.6.1", "26.6.2", "15.7.9", "14.8.9"}
    page1 = client.get("/v1/releases?limit=10", headers=R).json()
    page2 = client.get("/v1/releases?limit=10&offset=10", headers=R).json()
    assert page1["total"] == page2["total"] > 100
    assert {r["version"] for r in page1["items"]}.isdisjoint(
        {r["version"] for r in page2["items"]} - {r["version"] for r in page1["items"]}
    )
    assert len(page1["items"]) == 10


def test_expiry_is_a_flag_and_the_latest_of_each_major_stays_listed(august):
    client, clock = august
    clock.at = datetime(2026, 12, 1, tzinfo=UTC)  # everything signed has expired by then
    everything = client.get("/v1/releases?major=26&limit=500", headers=R).json()
    current = client.get("/v1/releases?major=26&include_expired=false", headers=R).json()
    assert any(r["expired"] for r in everything["items"])
    assert [r["version"] for r in current["items"] if r["kind"] != "bsi"] == ["26.6.2"]
    latest = client.get("/v1/majors/26/latest", headers=R).json()["latest"]
    assert latest["version"] == "26.6.2" and latest["expired"] is True


def test_a_release_by_build_and_an_unknown_build(august):
    client, _ = august
    release = client.get("/v1/releases/25G76", headers=R).json()
    assert release["version"] == "26.6.1" and release["exploited_cves"] == ["CVE-2026-65400"]
    assert client.get("/v1/releases/99Z999", headers=R).status_code == 404


def test_the_board_device_map_and_the_source_status(august):
    client, _ = august
    devices = {d["board_id"]: d for d in client.get("/v1/devices", headers=R).json()["items"]}
    assert devices["J700AP"]["marketing_name"].startswith("MacBook Neo")
    sources = {s["name"]: s for s in client.get("/v1/sources", headers=R).json()["items"]}
    assert sources["gdmf"]["ok"] and sources["sofa"]["ok"]
    assert sources["sofa"]["used_url"] == "bundled:sofa_v2_snapshot.json"
    assert sources["gdmf"]["releases_listed"] == 17


@pytest.mark.parametrize(
    "path",
    [
        "/v1/releases?major=9223372036854775808",
        "/v1/releases?major=2147483648",
        "/v1/releases?major=-1",
        "/v1/releases?since=yesterday",
        "/v1/releases?device_id=%00",
        "/v1/releases?limit=0",
        "/v1/majors/99999999999999999999/latest",
        "/v1/majors/2147483648/latest",
        "/v1/majors/26/latest?device_id=" + "x" * 100,
        "/v1/releases/%00",
        "/v1/releases/" + "9" * 40,
        "/v1/sync?source=everything",
    ],
)
def test_hostile_query_parameters_get_a_422_never_a_500(august, path):
    client, _ = august
    method = client.post if path.startswith("/v1/sync") else client.get
    response = method(path, headers=W)
    # A NUL anywhere in the URL is refused before routing, for every service (400).
    expected = (400, "malformed") if "%00" in path else (422, "invalid")
    assert (response.status_code, response.json()["error"]["code"]) == expected, response.text


def test_a_missing_ca_bundle_stops_the_catalog_from_starting(tmp_path):
    from catalog.main import SPEC
    from catalog.settings import CatalogSettings
    from managed_os.app import create_app
    from managed_os.settings import ConfigurationError

    with pytest.raises(ConfigurationError, match="CA_BUNDLE"):
        create_app(SPEC, CatalogSettings(ca_bundle=str(tmp_path / "missing.pem")))


def test_the_latest_for_everyone_skips_a_version_shipped_for_one_model(tmp_path):
    with service_client(
        "catalog", tmp_path, gdmf_url=march_2026_gdmf(tmp_path).as_uri(), sofa_url=""
    ) as client:
        client.post("/v1/sync", headers=W)
        everyone = client.get("/v1/majors/26/latest", headers=R).json()
    # 26.3.2 existed only for the MacBook Neo (J700AP); everyone else's latest was 26.3.1 (a).
    assert (everyone["latest"]["version"], everyone["bsi"]["build"]) == ("26.3.1", "25D771280a")
