"""Device-channel edge cases found in review: NUL strings in a status report, the lifespan
run twice on one app, the next sync after each report while other readers hammer two replicas,
and simultaneous first contacts of a new Mac (all 200, none 409)."""

from __future__ import annotations

import asyncio
import json

from managed_os.app import create_app
from managed_os.service import ServiceContext
from managed_os.suite import load_spec
from tests.integration.test_sync_cache_replicas import DEVICE as MAC1
from tests.integration.test_sync_cache_replicas import replica, two_replicas

DEVICE = {"X-Enrollment-ID": "MAC-NUL"}


async def test_a_status_report_with_a_nul_string_is_a_client_error_not_500(pg):
    async with replica(pg.create()) as r:
        items = {
            "device": {"operating-system": {"version": "26.4.1", "build-version": "25E\u0000"}}
        }
        body = json.dumps({"StatusItems": items, "Errors": [], "FullReport": True})
        response = await r.http.put("/ddm/status", content=body, headers=DEVICE)
        assert response.status_code < 500, response.text


async def test_the_service_lifespan_can_run_twice_on_one_app(pg):
    spec = load_spec("device-channel")
    settings = spec.settings_cls(
        database_url=pg.create(), auto_migrate=True, auth_secret="x" * 40, allow_unsigned=True
    )
    app = create_app(spec, settings)
    for _ in range(2):
        async with app.router.lifespan_context(app):
            ctx: ServiceContext = app.state.ctx
            assert ctx.state is not None


async def test_stress_the_next_sync_after_a_report_on_the_same_replica_is_fresh(pg):
    async with two_replicas(pg) as (a, b):
        stop = asyncio.Event()

        async def hammer(r) -> None:
            while not stop.is_set():
                await r.http.get("/ddm/tokens", headers=MAC1)
                await r.http.get("/ddm/declaration-items", headers=MAC1)
                await asyncio.sleep(0)  # a hit never yields over ASGITransport

        tasks = [asyncio.create_task(hammer(r)) for r in (a, b, a, b)]
        failures = []
        try:
            for i in range(60):
                writer = (a, b)[i % 2]
                version = "26.6" if i % 3 == 0 else "26.4.1"
                await writer.report(version)
                got = await writer.token()
                stored = await writer.stored_token()
                if got != stored:
                    failures.append((i, got, stored))
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        assert not failures


async def test_concurrent_first_contacts_of_one_new_mac_all_succeed(pg):
    async with replica(pg.create()) as r:
        new = {"X-Enrollment-ID": "MAC-NEW"}
        body = json.dumps({"StatusItems": {}, "Errors": []})
        responses = await asyncio.gather(
            *(r.http.get("/ddm/tokens", headers=new) for _ in range(5)),
            *(r.http.put("/ddm/status", content=body, headers=new) for _ in range(3)),
        )
        assert [x.status_code for x in responses] == [200] * 8, [x.text for x in responses]
