"""Pushes to an MDM server (a NanoMDM stand-in on loopback): queued with the manifest change,
batched per token, retried, and never lost by a sender that dies mid-send."""

from __future__ import annotations

import asyncio
import base64
import json
import plistlib
from datetime import UTC, datetime, timedelta

from catalog.feeds import parse_gdmf
from declarations.compiler import compile_blueprint, policy_token
from declarations.schemas import LibraryItem
from device_channel import push, service
from device_channel.main import SPEC
from device_channel.repository import DeviceChannelUnitOfWork
from managed_os.clock import FixedClock
from managed_os.db import make_engine
from managed_os.migrations import upgrade
from managed_os.policy import Policy
from tests.support.catalog import FEEDS
from tests.support.feedserver import Reply, feed_server

NOW = datetime(2026, 8, 25, 12, tzinfo=UTC)
ITEM = LibraryItem.model_validate(
    {
        "id": "22222222-2222-2222-2222-222222222222",
        "major": 26,
        "label": "",
        "blueprint_ids": ["bp"],
        "installation_method": "continuously_enforce",
        "version_enforcement": {
            "mode": "minimum",
            "version": "26.5",
            "deadline": "2026-09-01",
            "at": "17:00",
        },
        "upgrade_enforced_since": NOW,
        "created_at": NOW,
        "updated_at": NOW,
    }
)


def status(version: str) -> bytes:
    return json.dumps(
        {
            "StatusItems": {
                "device": {"operating-system": {"version": version, "build-version": "25E253"}}
            },
            "Errors": [],
        }
    ).encode()


async def setup(tmp_path):
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'dc.db'}")
    await upgrade(SPEC, engine)

    def make() -> DeviceChannelUnitOfWork:
        return DeviceChannelUnitOfWork(engine, SPEC.outbox_table, SPEC.inbox_table)

    candidates = compile_blueprint(
        [ITEM], parse_gdmf((FEEDS / "gdmf_pmv_2026-08-22_sofa_cache.json").read_bytes())
    )
    async with make() as uow:
        await service.on_policy(
            uow,
            Policy(
                blueprint_id="bp", revision=1, token=policy_token(candidates), candidates=candidates
            ),
            NOW,
        )
        for eid in ("MAC-1", "MAC-2", "MAC-3"):
            await service.register(uow, eid, {"blueprint_id": "bp"}, NOW)
        await uow.commit()
    return engine, make


def settings(url: str):
    return SPEC.settings_cls(
        allow_unsigned=True, mdm_url=url, mdm_api_key="secret", push_batch_size=2
    )


async def test_a_manifest_change_is_pushed_batched_per_token_with_the_tokens_in_data(tmp_path):
    engine, make = await setup(tmp_path)
    async with feed_server() as mdm:
        mdm.play("/v1/enqueue/MAC-1,MAC-2", Reply(200, b"{}"))
        mdm.play("/v1/enqueue/MAC-3", Reply(200, b"{}"))
        cfg = settings(mdm.base)
        sender = push.PushSender(cfg)
        clock = FixedClock(NOW)
        # Registration put all three on the blueprint: one push each, same token.
        assert await push.drain_once(make, sender, cfg, clock) == (3, 0)
        assert [p for p, _ in mdm.requests] == ["/v1/enqueue/MAC-1,MAC-2", "/v1/enqueue/MAC-3"]
        auth = mdm.requests[0][1]["authorization"]
        assert base64.b64decode(auth.split()[1]) == b"nanomdm:secret"
        command = plistlib.loads(mdm.bodies[0])
        assert command["Command"]["RequestType"] == "DeclarativeManagement"
        tokens = json.loads(command["Command"]["Data"])
        async with make() as uow:
            device = await uow.devices.get("MAC-1")
            assert await uow.pushes.pending() == 0
        assert tokens["SyncTokens"]["DeclarationsToken"] == device.declarations_token
        # A status report that changes the Mac's manifest queues exactly one more push.
        async with make() as uow:
            await service.ingest_status(uow, "MAC-1", status("26.4.1"), NOW)
            await uow.commit()
        mdm.play("/v1/enqueue/MAC-1", Reply(200, b"{}"))
        assert await push.drain_once(make, sender, cfg, clock) == (1, 0)
        await sender.aclose()
    await engine.dispose()


async def test_a_failed_push_is_retried_with_backoff_and_a_dead_sender_loses_nothing(tmp_path):
    engine, make = await setup(tmp_path)
    async with feed_server() as mdm:
        mdm.play("/v1/enqueue/MAC-1,MAC-2", Reply(503, b"busy"), Reply(200, b"{}"))
        mdm.play("/v1/enqueue/MAC-3", Reply(200, b"{}"))
        cfg = settings(mdm.base)
        sender = push.PushSender(cfg)
        clock = FixedClock(NOW)
        assert await push.drain_once(make, sender, cfg, clock) == (1, 2)
        async with make() as uow:
            assert await uow.pushes.pending() == 2
        assert await push.drain_once(make, sender, cfg, clock) == (0, 0)  # backing off
        clock.at = NOW + push.backoff(1) + timedelta(seconds=1)
        assert await push.drain_once(make, sender, cfg, clock) == (2, 0)

        # A sender that leases and dies: nothing is sent until the lease runs out, then it is.
        async with make() as uow:
            await service.ingest_status(uow, "MAC-3", status("26.4.1"), clock.at)
            await uow.commit()
        async with make() as uow:
            leased = await uow.pushes.lease(clock.at, 10, timedelta(seconds=cfg.push_lease_seconds))
            await uow.commit()
        assert [p.enrollment_id for p in leased] == ["MAC-3"]
        assert await push.drain_once(make, sender, cfg, clock) == (0, 0)
        clock.at += timedelta(seconds=cfg.push_lease_seconds + 1)
        assert await push.drain_once(make, sender, cfg, clock) == (1, 0)
        await sender.aclose()
    await engine.dispose()


async def test_a_partial_enqueue_keeps_the_failed_macs_queued(tmp_path):
    engine, make = await setup(tmp_path)
    answer = {
        "status": {"MAC-1": {"push_result": "ok"}, "MAC-2": {"enqueue_error": "no such enrollment"}}
    }
    async with feed_server() as mdm:
        mdm.play("/v1/enqueue/MAC-1,MAC-2", Reply(207, json.dumps(answer).encode()))
        mdm.play("/v1/enqueue/MAC-3", Reply(200, b"{}"))
        cfg = settings(mdm.base)
        sender = push.PushSender(cfg)
        assert await push.drain_once(make, sender, cfg, FixedClock(NOW)) == (2, 1)
        async with make() as uow:
            assert await uow.pushes.pending() == 1
        await sender.aclose()
    await engine.dispose()


async def test_one_bad_mac_does_not_hold_back_the_macs_batched_with_it(tmp_path):
    engine, make = await setup(tmp_path)
    async with feed_server() as mdm:
        mdm.play("/v1/enqueue/MAC-1,MAC-2", Reply(500, b"storage error"))
        mdm.play("/v1/enqueue/MAC-1", Reply(200, b"{}"))
        mdm.play("/v1/enqueue/MAC-2", Reply(500, b"no such enrollment"))
        mdm.play("/v1/enqueue/MAC-3", Reply(200, b"{}"))
        cfg = settings(mdm.base)
        sender = push.PushSender(cfg)
        assert await push.drain_once(make, sender, cfg, FixedClock(NOW)) == (2, 1)
        async with make() as uow:
            assert await uow.pushes.pending() == 1  # only MAC-2 waits, backing off
        await sender.aclose()
    await engine.dispose()


async def test_on_sqlite_a_policy_refresh_waits_for_a_status_transaction_that_read_the_mac(
    tmp_path,
):
    """SQLite has no row locks: a device writer takes the database's write lock before it reads
    the Mac, so a policy refresh cannot commit between a status report's reads and its write
    (which would leave the report's manifest computed from the old policy)."""
    engine, make = await setup(tmp_path)
    refreshed = asyncio.Event()

    async def refresh() -> None:
        candidates = compile_blueprint(
            [ITEM], parse_gdmf((FEEDS / "gdmf_pmv_2026-08-22_sofa_cache.json").read_bytes())
        )
        async with make() as uow:
            policy = Policy(blueprint_id="bp", revision=2, token="t2", candidates=candidates)
            await service.on_policy(uow, policy, NOW)
            await uow.commit()
        refreshed.set()

    try:
        async with make() as uow:
            await uow.devices.get_many(["MAC-1"], for_update=True)
            task = asyncio.create_task(refresh())
            await asyncio.sleep(0.5)
            assert not refreshed.is_set()  # waiting for this transaction
            await uow.commit()
        await asyncio.wait_for(task, 10)
        assert refreshed.is_set()
    finally:
        await engine.dispose()
