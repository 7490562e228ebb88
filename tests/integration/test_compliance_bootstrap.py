"""Compliance rebuilds its blueprints' item summaries from the declarations REST API at start,
with no event bus between them (as after the policies topic's retention ran out), and then
judges a Mac its board cannot run as `incompatible`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx

from managed_os import auth
from managed_os.bus.inprocess import InProcessBus
from managed_os.events import TOPIC_DEVICES, DeviceStatusReported, SoftwareUpdateState, to_event
from managed_os.policy import DeviceFacts
from managed_os.suite import embedded_settings, running_suite
from tests.support.infra import free_port


async def test_a_fresh_compliance_learns_blueprint_items_it_never_received_as_events(tmp_path):
    ports = {
        name: free_port() for name in ("catalog", "declarations", "device-channel", "compliance")
    }
    settings = embedded_settings(tmp_path, "127.0.0.1", ports)
    upstream = {k: settings[k] for k in ("catalog", "declarations")}
    secret = settings["catalog"].auth_secret.get_secret_value()
    admin = {"Authorization": f"Bearer {auth.issue_token(secret, auth.ALL_SCOPES)}"}
    async with (
        running_suite(upstream, shared_bus=InProcessBus()) as suite,
        httpx.AsyncClient(timeout=30) as http,
    ):
        decl = suite.urls["declarations"]
        bp = (await http.post(f"{decl}/v1/blueprints", json={"name": "b"}, headers=admin)).json()
        body = {
            "major": 26,
            "label": "Tahoe",
            "blueprint_ids": [bp["id"]],
            "installation_method": "continuously_enforce",
            "version_enforcement": {
                "mode": "minimum",
                "version": "26.5",
                "deadline": "2026-09-01",
                "at": "17:00",
            },
        }
        async with asyncio.timeout(60):  # until declarations has the catalog's releases
            while (
                item := await http.post(f"{decl}/v1/library-items", json=body, headers=admin)
            ).status_code == 422:
                await asyncio.sleep(0.2)
        assert item.status_code == 201, item.text
        listed = (await http.get(f"{decl}/v1/policies", headers=admin)).json()["items"]
        summary = next(p for p in listed if p["blueprint_id"] == bp["id"])["items"]
        assert [i["item_id"] for i in summary] == [item.json()["id"]]
        assert (
            "J313AP" in summary[0]["boards"] and "Mac-7BA5B2DFE22DDD8C" not in summary[0]["boards"]
        )

        # Compliance on its own bus: it hears no PolicyPublished, only the REST API. An old
        # iMac reports (its board cannot run 26); once the items are known, the sweep judges it.
        compliance = settings["compliance"].model_copy(update={"sweep_interval_seconds": 0.2})
        own_bus = InProcessBus()
        async with running_suite({"compliance": compliance}, shared_bus=own_bus) as cp:
            now = datetime.now(UTC)
            old_imac = DeviceStatusReported(
                enrollment_id="IMAC-1",
                blueprint_id=bp["id"],
                reported_at=now,
                full_report=True,
                facts=DeviceFacts(
                    enrollment_id="IMAC-1", os_version="15.7.1", device_id="Mac-7BA5B2DFE22DDD8C"
                ),
                softwareupdate=SoftwareUpdateState(),
                declarations=[],
                expected=[],
            )
            await own_bus.publish(
                TOPIC_DEVICES, to_event(old_imac, source="/t", subject="IMAC-1", time=now)
            )
            url = f"{cp.urls['compliance']}/v1/devices/IMAC-1"
            async with asyncio.timeout(30):
                while True:
                    r = await http.get(url, headers=admin)
                    if r.status_code == 200 and r.json()["state"] == "incompatible":
                        break
                    await asyncio.sleep(0.2)
            mac = r.json()
    assert mac["state"] == "incompatible", mac
    assert "cannot run macOS 26" in mac["reason"]
    assert [i["item_id"] for i in mac["items"]] == [item.json()["id"]]
