"""The device channel rebuilds its policy view from the declarations REST API at start, with
no event bus between them, and the declarations service lists every latest policy."""

from __future__ import annotations

import asyncio

import httpx

from managed_os import auth
from managed_os.suite import load_spec, running_suite
from tests.support.infra import free_port

SECRET = "dc-bootstrap-secret-0123456789abcdef012"


async def test_a_fresh_device_channel_serves_policies_it_never_received_as_events(tmp_path):
    common = {"host": "127.0.0.1", "auto_migrate": True, "auth_secret": SECRET}
    decl_port = free_port()
    declarations = load_spec("declarations").settings_cls(
        **common, port=decl_port, database_url=f"sqlite+aiosqlite:///{tmp_path}/d.db"
    )
    channel = load_spec("device-channel").settings_cls(
        **common,
        port=free_port(),
        database_url=f"sqlite+aiosqlite:///{tmp_path}/c.db",
        allow_unsigned=True,
        declarations_url=f"http://127.0.0.1:{decl_port}",
    )
    headers = {"Authorization": f"Bearer {auth.issue_token(SECRET, auth.ALL_SCOPES)}"}
    async with running_suite({"declarations": declarations}) as suite, httpx.AsyncClient() as http:
        base = suite.urls["declarations"]
        ids = []
        for n in range(3):
            bp = await http.post(f"{base}/v1/blueprints", json={"name": f"b{n}"}, headers=headers)
            ids.append(bp.json()["id"])
        page = (await http.get(f"{base}/v1/policies?limit=2", headers=headers)).json()
        assert page["total"] == 3 and len(page["items"]) == 2
        async with running_suite({"device-channel": channel}) as dc:
            dc_base = dc.urls["device-channel"]
            await http.post(
                f"{dc_base}/v1/devices",
                headers=headers,
                json={"enrollment_id": "MAC-1", "blueprint_id": ids[2]},
            )
            async with asyncio.timeout(30):
                while True:
                    items = (
                        await http.get(
                            f"{dc_base}/ddm/declaration-items", headers={"X-Enrollment-ID": "MAC-1"}
                        )
                    ).json()
                    if items["Declarations"]["Configurations"]:
                        break
                    await asyncio.sleep(0.2)
    assert [c["Identifier"] for c in items["Declarations"]["Configurations"]] == [
        "managed-os.status-subscriptions"
    ]
