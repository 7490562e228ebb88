"""The spine, end to end through all four services, on both backends:

catalog loads a feed file → an admin creates a blueprint and a minimum-version item → the
declarations service compiles and publishes the policy → a Mac on that blueprint syncs over
DDM and gets the enforcement → it reports the new OS → compliance says `up_to_date`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from managed_os.clock import FixedClock
from tests.support.suite import FakeMac, admin_headers, embedded_suite, postgres_kafka_suite

NOW = datetime(2026, 8, 25, 12, 0, tzinfo=UTC)


async def eventually(
    probe: Callable[[], Awaitable[Any]], ok: Callable[[Any], bool], timeout: float = 120
) -> Any:
    """Poll `probe` until `ok(result)`; the services are eventually consistent via the bus."""
    async with asyncio.timeout(timeout):
        while True:
            result = await probe()
            if ok(result):
                return result
            await asyncio.sleep(0.2)


def status_items(version: str, build: str) -> dict[str, Any]:
    return {
        "device": {
            "operating-system": {"version": version, "build-version": build},
            "model": {"identifier": "Mac15,3", "family": "Mac"},
        },
        "softwareupdate": {
            "device-id": "J514mAP",
            "install-state": "none",
            "failure-reason": {"count": 0},
            "pending-version": {"os-version": "", "build-version": ""},
        },
    }


@pytest.fixture(params=["embedded", "postgres+kafka"])
def suite_factory(request: pytest.FixtureRequest, tmp_path):
    clock = FixedClock(NOW)
    if request.param == "embedded":
        return lambda: embedded_suite(tmp_path, clock)
    pg, kafka = request.getfixturevalue("pg"), request.getfixturevalue("kafka")
    return lambda: postgres_kafka_suite(pg, kafka, clock)


async def test_a_mac_below_the_minimum_is_told_to_update_and_becomes_compliant(suite_factory):
    async with suite_factory() as suite, httpx.AsyncClient(timeout=30) as http:
        urls, admin = suite.urls, admin_headers(suite)

        # 1. The catalog has loaded the feed file.
        latest = await eventually(
            lambda: http.get(f"{urls['catalog']}/v1/majors/26/latest", headers=admin),
            lambda r: r.status_code == 200,
        )
        assert latest.json()["latest"]["version"] == "26.6.2"
        assert latest.json()["latest"]["build"] == "25G83"

        # 2. An admin creates a blueprint and a Managed OS item (minimum 26.5).
        bp = await http.post(
            f"{urls['declarations']}/v1/blueprints", json={"name": "Engineering"}, headers=admin
        )
        assert bp.status_code == 201, bp.text
        blueprint_id = bp.json()["id"]
        item_body = {
            "major": 26,
            "label": "Tahoe baseline",
            "blueprint_ids": [blueprint_id],
            "installation_method": "continuously_enforce",
            "version_enforcement": {
                "mode": "minimum",
                "version": "26.5",
                "deadline": "2026-09-01",
                "at": "17:00",
            },
        }
        # The declarations service learns releases from the bus; until it has 26.5, 422.
        item = await eventually(
            lambda: http.post(
                f"{urls['declarations']}/v1/library-items", json=item_body, headers=admin
            ),
            lambda r: r.status_code != 422,
        )
        assert item.status_code == 201, item.text

        # 3. The Mac is enrolled on the blueprint and syncs before reporting anything.
        dc = urls["device-channel"]
        reg = await http.post(
            f"{dc}/v1/devices",
            json={"enrollment_id": "MAC-0001", "blueprint_id": blueprint_id},
            headers=admin,
        )
        assert reg.status_code == 201, reg.text
        mac = FakeMac(http, dc, "MAC-0001")

        # Once the policy has arrived, an unreported Mac gets only its status subscriptions.
        items = await eventually(
            lambda: mac.get("declaration-items"),
            lambda r: r.status_code == 200 and r.json()["Declarations"]["Configurations"],
        )
        configs = items.json()["Declarations"]["Configurations"]
        assert [c["Identifier"] for c in configs] == ["managed-os.status-subscriptions"]

        # 4. It reports macOS 26.4.1; once the item's policy has arrived, its manifest
        #    carries the enforcement.
        assert (await mac.report(status_items("26.4.1", "25E253"), full=True)).status_code == 200

        def enforcement_ids(manifest: dict[str, Any]) -> list[str]:
            configs = manifest["Declarations"]["Configurations"]
            return [c["Identifier"] for c in configs if ".u." in c["Identifier"]]

        async def enforcement() -> tuple[dict[str, Any], dict[str, Any]] | None:
            listing = await mac.get("declaration-items")
            ids = enforcement_ids(listing.json()) if listing.status_code == 200 else []
            if len(ids) != 1:
                return None
            decl = await mac.get(f"declaration/configuration/{ids[0]}")
            return (listing.json(), decl.json()) if decl.status_code == 200 else None

        # The policy converges as the declarations service consumes the catalog's releases:
        # wait until it targets the newest one.
        try:
            items, body = await eventually(
                enforcement,
                lambda got: got is not None and got[1]["Payload"]["TargetOSVersion"] == "26.6.2",
            )
        except TimeoutError:
            policy = (
                await http.get(
                    f"{urls['declarations']}/v1/blueprints/{blueprint_id}/policy", headers=admin
                )
            ).json()
            targets = sorted(
                {
                    c["declaration"]["Payload"].get("TargetOSVersion", "-")
                    for c in policy.get("candidates", [])
                }
            )
            seen = await enforcement()
            raise AssertionError(
                f"the Mac never got 26.6.2: policy revision {policy.get('revision')} targets "
                f"{targets}; the Mac holds {seen and seen[1]['Payload']}"
            ) from None
        tokens = (await mac.get("tokens")).json()["SyncTokens"]
        assert items["DeclarationsToken"] == tokens["DeclarationsToken"]
        enforcement_id = enforcement_ids(items)[0]
        assert body["Type"] == "com.apple.configuration.softwareupdate.enforcement.specific"
        assert body["Payload"] == {
            "TargetOSVersion": "26.6.2",
            "TargetLocalDateTime": "2026-09-01T17:00:00",
        }
        listed = {
            c["Identifier"]: c["ServerToken"] for c in items["Declarations"]["Configurations"]
        }
        assert body["ServerToken"] == listed[enforcement_id]
        activation = items["Declarations"]["Activations"][0]
        act = (await mac.get(f"declaration/activation/{activation['Identifier']}")).json()
        assert sorted(act["Payload"]["StandardConfigurations"]) == sorted(listed)
        # The token is stable across requests; unknown declarations are 404.
        assert (await mac.get("tokens")).json()["SyncTokens"]["DeclarationsToken"] == (
            tokens["DeclarationsToken"]
        )
        assert (await mac.get("declaration/configuration/not-there")).status_code == 404

        cp = urls["compliance"]
        pending = await eventually(
            lambda: http.get(f"{cp}/v1/devices/MAC-0001", headers=admin),
            lambda r: (
                r.status_code == 200
                and r.json()["state"] == "pending"
                and r.json()["target_version"] == "26.6.2"
            ),
        )
        assert pending.json()["target_version"] == "26.6.2"

        # 5. The Mac installs 26.6.2 and reports it: compliance says up to date.
        assert (await mac.report(status_items("26.6.2", "25G83"))).status_code == 200
        done = await eventually(
            lambda: http.get(f"{cp}/v1/devices/MAC-0001", headers=admin),
            lambda r: r.status_code == 200 and r.json()["state"] == "up_to_date",
        )
        assert done.json()["os_version"] == "26.6.2"
        after = (await mac.get("declaration-items")).json()
        assert after["DeclarationsToken"] != items["DeclarationsToken"]
        assert not any(".u." in c["Identifier"] for c in after["Declarations"]["Configurations"])
        summary = (await http.get(f"{cp}/v1/summary", headers=admin)).json()
        assert summary["counts"]["up_to_date"] == 1
