"""Status reports stored without an explicit transaction (PostgreSQL): a device row another
writer changed between the read and the write is never overwritten from the stale read; it is
read and planned again, from what that writer stored."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from device_channel import service
from device_channel.repository import StatusBatchStore, StatusPlan, VersionedDevice
from device_channel.sync_cache import Key
from managed_os import ddm
from managed_os.events import TOPIC_DEVICES, DeviceStatusReported
from managed_os.manifest import build_manifest
from managed_os.policy import Applicability, Candidate, Policy
from tests.integration.test_sync_cache_replicas import ADMIN, Replica, two_replicas


def report(version: str, install_state: str = "none") -> ddm.StatusReport:
    items = {
        "device": {"operating-system": {"version": version, "build-version": "25E253"}},
        "softwareupdate": {"install-state": install_state},
    }
    return ddm.parse_status_report(json.dumps({"StatusItems": items, "FullReport": True}))


def policy(revision: int, below: str) -> Policy:
    """The policy `Replica.install` stores."""
    enforce = ddm.softwareupdate_enforcement(f"cfg-{below}", below, datetime(2026, 9, 1, 17))
    subs = ddm.status_subscriptions("subs", ["device.operating-system.version"])
    candidates = [
        Candidate(declaration=subs.to_json(), applies=Applicability(always=True)),
        Candidate(
            declaration=enforce.to_json(), applies=Applicability(majors=[26], version_below=below)
        ),
    ]
    return Policy(blueprint_id="bp", revision=revision, token=f"t{revision}", candidates=candidates)


class Interleaved:
    """A `StatusBatchStore` that lets another writer in between its first read and write."""

    def __init__(self, store: StatusBatchStore, between: Callable[[], Awaitable[None]]) -> None:
        self.store, self.between = store, between
        self.reads = self.writes = 0

    async def read(self, ids: Sequence[str]) -> dict[str, VersionedDevice]:
        self.reads += 1
        return await self.store.read(ids)

    async def write(
        self, plan: StatusPlan, read: dict[str, VersionedDevice], now: datetime
    ) -> set[str]:
        self.writes += 1
        if self.writes == 1:
            await self.between()
        return await self.store.write(plan, read, now)


async def status_events(r: Replica) -> list[dict[str, Any]]:
    async with r.ctx.engine.connect() as conn:
        rows = await conn.exec_driver_sql(
            f"SELECT envelope FROM outbox WHERE topic = '{TOPIC_DEVICES}' ORDER BY id"
        )
        return [row.envelope for row in rows if row.envelope["type"] == DeviceStatusReported.TYPE]


async def keep_outbox(*replicas: Replica) -> None:
    """Stop the relays, so the outbox rows stay to be looked at."""
    for r in replicas:
        assert r.ctx.relay is not None
        await r.ctx.relay.stop()


async def stored(r: Replica) -> dict[str, Any]:
    device: dict[str, Any] = (await r.http.get("/v1/devices/MAC-1", headers=ADMIN)).json()
    return device["device"]


async def test_a_write_over_a_row_changed_since_the_read_stores_nothing_of_the_read(pg):
    async with two_replicas(pg) as (a, b):
        await keep_outbox(a, b)
        state, now = a.state, a.ctx.clock.now()
        async with a.ctx.engine.connect() as conn:
            store = await StatusBatchStore.of(conn)
            rows = await store.read(["MAC-1"])
            assert rows["MAC-1"].policy_token == "t1"
            plan = service.plan_statuses(
                state.manifests,
                {"MAC-1": rows["MAC-1"].device},
                {"bp": policy(1, "26.6")},
                [("MAC-1", report("26.5", "downloading"))],
                now,
            )
            before = await status_events(a)
            await a.install(2, "26.7")  # rewrites MAC-1's row: a new row version
            assert await store.write(plan, rows, now) == set()
            assert await status_events(a) == before
        assert (await stored(a))["facts"]["os_version"] == "26.4.1"


async def test_a_policy_refresh_between_read_and_write_is_planned_again_from_the_new_one(pg):
    async with two_replicas(pg) as (a, b):
        await keep_outbox(a, b)
        state, now = a.state, a.ctx.clock.now()
        second = policy(2, "26.7")
        state.policies.put(second)  # parsed already (as a sync would have), so no locked path
        done: set[str] = set()
        changed: set[Key] = set()
        async with a.ctx.engine.connect() as conn:
            store = Interleaved(await StatusBatchStore.of(conn), lambda: a.install(2, "26.7"))
            await service.ingest_statuses_unlocked(
                store,
                state,
                [("MAC-1", report("26.5", "downloading"))],
                now,
                done,
                changed,
            )
        assert (store.reads, store.writes, done) == (2, 2, {"MAC-1"})
        device = await stored(a)
        assert device["facts"]["os_version"] == "26.5"
        expected = build_manifest(second, service.facts_from_status("MAC-1", report("26.5")))
        assert device["declarations_token"] == expected.token
        last = (await status_events(a))[-1]["data"]
        assert last["facts"]["os_version"] == "26.5"
        assert last["softwareupdate"]["install_state"] == "downloading"
        assert await a.token() == expected.token
