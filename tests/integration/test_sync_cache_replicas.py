"""Two device-channel replicas on one PostgreSQL database: a write through either one reaches the
other's sync cache by NOTIFY/LISTEN, and a lost LISTEN connection empties the cache until a
new one listens."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import httpx

from device_channel.listener import LISTENER_NAME
from device_channel.service import on_policy
from device_channel.state import DeviceChannelState
from managed_os import auth, ddm
from managed_os.app import create_app
from managed_os.policy import Applicability, Candidate, Policy
from managed_os.service import ServiceContext
from managed_os.suite import load_spec

SECRET = "sync-cache-replicas-secret-0123456789ab"
ADMIN = {"Authorization": f"Bearer {auth.issue_token(SECRET, auth.ALL_SCOPES)}"}
DEVICE = {"X-Enrollment-ID": "MAC-1"}


@dataclass
class Replica:
    ctx: ServiceContext
    http: httpx.AsyncClient

    @property
    def state(self) -> DeviceChannelState:
        state: DeviceChannelState = self.ctx.state
        return state

    async def token(self) -> str:
        body = (await self.http.get("/ddm/tokens", headers=DEVICE)).json()
        return str(body["SyncTokens"]["DeclarationsToken"])

    async def cached_token(self) -> str:
        """Sync until the answer comes from memory (an invalidation still in flight from the
        setup's own writes may drop the first read)."""
        async with asyncio.timeout(10):
            while True:
                token = await self.token()
                if "MAC-1" in self.state.cache:
                    return token
                await asyncio.sleep(0.01)

    async def stored_token(self) -> str:
        device = (await self.http.get("/v1/devices/MAC-1", headers=ADMIN)).json()
        return str(device["device"]["declarations_token"])

    async def report(self, version: str) -> None:
        items = {"device": {"operating-system": {"version": version, "build-version": "25E253"}}}
        body = json.dumps({"StatusItems": items, "Errors": [], "FullReport": True})
        assert (await self.http.put("/ddm/status", content=body, headers=DEVICE)).status_code == 200

    async def install(self, revision: int, below: str) -> None:
        enforce = ddm.softwareupdate_enforcement(f"cfg-{below}", below, datetime(2026, 9, 1, 17))
        subs = ddm.status_subscriptions("subs", ["device.operating-system.version"])
        candidates = [
            Candidate(declaration=subs.to_json(), applies=Applicability(always=True)),
            Candidate(
                declaration=enforce.to_json(),
                applies=Applicability(majors=[26], version_below=below),
            ),
        ]
        policy = Policy(
            blueprint_id="bp", revision=revision, token=f"t{revision}", candidates=candidates
        )
        async with self.ctx.uow() as uow:
            await on_policy(uow, policy, self.ctx.clock.now())
            await uow.commit()


async def until(condition: Callable[[], bool], what: str, seconds: float = 10) -> None:
    try:
        async with asyncio.timeout(seconds):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@asynccontextmanager
async def replica(url: str) -> AsyncIterator[Replica]:
    spec = load_spec("device-channel")
    settings = spec.settings_cls(
        database_url=url, auto_migrate=True, auth_secret=SECRET, allow_unsigned=True
    )
    app = create_app(spec, settings)
    async with app.router.lifespan_context(app):
        ctx: ServiceContext = app.state.ctx
        await until(lambda: ctx.state.cache.enabled, "LISTEN")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as http:
            yield Replica(ctx, http)


@asynccontextmanager
async def two_replicas(pg) -> AsyncIterator[tuple[Replica, Replica]]:
    url = pg.create()
    async with replica(url) as a, replica(url) as b:
        registered = await a.http.post(
            "/v1/devices", json={"enrollment_id": "MAC-1", "blueprint_id": "bp"}, headers=ADMIN
        )
        assert registered.status_code == 201
        await a.install(1, "26.6")
        await a.report("26.4.1")
        yield a, b


async def test_a_status_report_through_one_replica_moves_the_others_next_sync(pg):
    async with two_replicas(pg) as (a, b):
        before = await b.cached_token()  # B now answers MAC-1 from memory
        await a.report("26.6")  # up to date: the enforcement leaves the manifest
        await until(lambda: "MAC-1" not in b.state.cache, "B to hear of the change")
        after = await b.token()
        assert after != before
        assert after == await a.token() == await a.stored_token()


async def test_a_new_policy_stored_by_one_replica_is_served_by_the_other(pg):
    async with two_replicas(pg) as (a, b):
        before = await b.cached_token()
        assert b.state.cache.policy("bp") is not None
        await a.install(2, "26.7")
        await until(lambda: b.state.cache.policy("bp") is None, "B to drop the old policy")
        after = await b.token()
        assert after != before and after == await a.stored_token()
        items = (await b.http.get("/ddm/declaration-items", headers=DEVICE)).json()
        assert "cfg-26.7" in [c["Identifier"] for c in items["Declarations"]["Configurations"]]


async def test_an_admin_change_through_one_replica_reaches_the_other(pg):
    async with two_replicas(pg) as (a, b):
        await b.cached_token()
        moved = await a.http.put(
            "/v1/devices/MAC-1/blueprint", json={"blueprint_id": None}, headers=ADMIN
        )
        assert moved.status_code == 200
        await until(lambda: "MAC-1" not in b.state.cache, "B to hear of the move")
        assert await b.token() == ddm.declarations_token([]) == await a.stored_token()


async def test_losing_the_listen_connection_empties_the_cache_until_listening_again(pg):
    async with two_replicas(pg) as (a, b):
        await b.cached_token()
        url = str(b.ctx.settings.database_url).replace("postgresql+asyncpg", "postgresql")
        admin = await asyncpg.connect(url)
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = $1 AND datname = current_database()",
                LISTENER_NAME,
            )
        finally:
            await admin.close()
        assert killed == 2  # both replicas' listeners
        await until(lambda: not b.state.cache.enabled, "B to notice the loss")
        assert "MAC-1" not in b.state.cache
        await a.report("26.6")  # changed while B cannot hear: B reads the database
        assert await b.token() == await a.stored_token()
        await until(lambda: b.state.cache.enabled, "B to listen again")
        assert await b.token() == await a.stored_token()
        assert "MAC-1" in b.state.cache


async def test_a_read_overtaken_by_another_replicas_commit_is_not_cached(pg):
    async with two_replicas(pg) as (a, b):
        await b.cached_token()
        b.state.cache.invalidate([("device", "MAC-1")])  # B is about to miss ...
        epoch = b.state.cache.epoch()
        async with b.ctx.uow() as uow:  # ... and reads the row as it is now
            old = await uow.devices.snapshot("MAC-1")
        assert old is not None
        await a.report("26.6")  # A commits a change before B stores what it read
        key = ("device", "MAC-1")
        await until(lambda: not b.state.cache.fresh(key, epoch), "B to hear of the change")
        assert not b.state.cache.put_device("MAC-1", old, epoch)
        assert await b.token() == await a.stored_token()
