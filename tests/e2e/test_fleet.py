"""A simulated fleet reaches compliance through the whole suite (embedded), speaking DDM over
HTTP in both forms, HMAC-signed; with installs failing, compliance reports why."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import pytest

from managed_os.clock import FixedClock
from simulator.run import SimulateArgs, prepare
from tests.support.suite import HMAC_KEY, admin_headers, embedded_suite

NOW = datetime(2026, 8, 25, 12, tzinfo=UTC)


async def setup_blueprint(http: httpx.AsyncClient, urls: dict[str, str], headers) -> str:
    bp = (
        await http.post(
            f"{urls['declarations']}/v1/blueprints", json={"name": "fleet"}, headers=headers
        )
    ).json()["id"]
    item = {
        "major": 26,
        "blueprint_ids": [bp],
        "installation_method": "continuously_enforce",
        "version_enforcement": {
            "mode": "minimum",
            "version": "26.6.2",
            "deadline": "2026-09-01",
            "at": "17:00",
        },
    }
    async with asyncio.timeout(60):
        while (
            await http.post(f"{urls['declarations']}/v1/library-items", json=item, headers=headers)
        ).status_code != 201:
            await asyncio.sleep(0.2)
    return bp


@pytest.mark.parametrize(("failure_rate", "state"), [(0.0, "up_to_date"), (1.0, "failed")])
async def test_a_simulated_fleet_reaches_the_expected_compliance(tmp_path, failure_rate, state):
    async with (
        embedded_suite(tmp_path, FixedClock(NOW)) as suite,
        httpx.AsyncClient(timeout=60) as http,
    ):
        urls, headers = suite.urls, admin_headers(suite)
        bp = await setup_blueprint(http, urls, headers)
        args = SimulateArgs(
            catalog=urls["catalog"],
            device_channel=urls["device-channel"],
            token=headers["Authorization"].split()[1],
            blueprint=bp,
            devices=30,
            failure_rate=failure_rate,
            hmac_key=HMAC_KEY,
        )
        fleet = await prepare(http, args)
        assert fleet.checkin and len(fleet.checkin) < len(fleet.macs)  # both forms in use
        summary: dict = {}
        async with asyncio.timeout(90):
            while summary.get("counts", {}).get(state) != len(fleet.macs):
                await fleet.tick(http)
                await asyncio.sleep(0.1)
                summary = (
                    await http.get(f"{urls['compliance']}/v1/summary", headers=headers)
                ).json()
        assert summary["total"] == len(fleet.macs)
        if state == "up_to_date":
            assert {m.version for m in fleet.macs} == {"26.6.2"}
            assert summary["percent_up_to_date"] == 100.0
        else:
            failed = (
                await http.get(f"{urls['compliance']}/v1/devices?state=failed", headers=headers)
            ).json()["items"]
            assert all("disk space" in d["reason"] for d in failed)
