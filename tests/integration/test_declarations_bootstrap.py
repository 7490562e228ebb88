"""The declarations service rebuilds its release view from the catalog's REST API at start,
with no event bus between them."""

from __future__ import annotations

import asyncio

import httpx

from managed_os import auth
from managed_os.suite import load_spec, running_suite
from tests.support.infra import free_port

SECRET = "bootstrap-secret-0123456789abcdef0123"


async def test_a_fresh_declarations_service_learns_every_release_from_the_catalog(tmp_path):
    catalog_port, declarations_port = free_port(), free_port()
    common = {"host": "127.0.0.1", "auto_migrate": True, "auth_secret": SECRET}
    catalog = load_spec("catalog").settings_cls(
        **common, port=catalog_port, database_url=f"sqlite+aiosqlite:///{tmp_path}/c.db"
    )
    declarations = load_spec("declarations").settings_cls(
        **common,
        port=declarations_port,
        database_url=f"sqlite+aiosqlite:///{tmp_path}/d.db",
        catalog_url=f"http://127.0.0.1:{catalog_port}",
        bootstrap_retry_seconds=0.2,
    )
    token = auth.issue_token(SECRET, auth.ALL_SCOPES)
    headers = {"Authorization": f"Bearer {token}"}
    # Each service gets its own in-process bus: no event can carry a release across.
    async with running_suite({"declarations": declarations}) as suite, httpx.AsyncClient() as http:
        base = suite.urls["declarations"]
        bp = (await http.post(f"{base}/v1/blueprints", json={"name": "b"}, headers=headers)).json()
        item = {
            "major": 26,
            "blueprint_ids": [bp["id"]],
            "installation_method": "continuously_enforce",
            "version_enforcement": {
                "mode": "minimum",
                "version": "26.5",
                "deadline": "2026-09-01",
                "at": "17:00",
            },
        }
        # The catalog is not up yet: the item cannot be validated against it.
        early = await http.post(f"{base}/v1/library-items", json=item, headers=headers)
        assert early.status_code == 422
        async with running_suite({"catalog": catalog}):
            async with asyncio.timeout(30):
                while True:
                    r = await http.post(f"{base}/v1/library-items", json=item, headers=headers)
                    if r.status_code == 201:
                        break
                    await asyncio.sleep(0.2)
            policy = (
                await http.get(f"{base}/v1/blueprints/{bp['id']}/policy", headers=headers)
            ).json()
    targets = {c["declaration"]["Payload"].get("TargetOSVersion") for c in policy["candidates"]}
    assert "26.6.2" in targets
