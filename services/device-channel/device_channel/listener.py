"""Keeps this replica's sync cache true across replicas, and fills it at start.

On PostgreSQL a dedicated asyncpg connection LISTENs on `mos_device_channel`; every commit that
changed what a sync reads sent `<kind>:<id>` there (`DeviceChannelUnitOfWork.commit`). The cache
serves only while that connection is up: it is enabled (empty) once LISTEN is in place, and
cleared and disabled the moment the connection is lost, until a new one listens again. A
connection that dies silently is caught by a round trip every 5 s (a change can go unheard for
that long only if the network drops the connection without closing it). On SQLite (one
process, the embedded mode) the unit of work's own invalidation is all there is, and the cache
is enabled at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from device_channel.models import devices, policies
from device_channel.repository import CHANNEL
from device_channel.sync_cache import POLICY_SLOTS, DeviceSnapshot, SyncCache
from managed_os.db import is_postgres
from managed_os.policy import Candidate, DeviceFacts, Policy

log = logging.getLogger(__name__)
LISTENER_NAME = "mos-device-channel-listener"  # in pg_stat_activity


async def keep_cache(
    cache: SyncCache,
    engine: AsyncEngine,
    *,
    warm: bool,
    retry_seconds: float = 1.0,
    check_seconds: float = 5.0,
) -> None:
    """Run for the life of the service (a background task)."""
    if cache.size == 0:
        return
    if not is_postgres(engine):
        cache.enable()
        if warm:
            await warm_up(cache, engine)
        return
    dsn = make_url(engine.url).set(drivername="postgresql").render_as_string(hide_password=False)
    while True:
        try:
            await _listen(cache, engine, dsn, warm=warm, check_seconds=check_seconds)
        except Exception as exc:  # whatever broke, the cache stays off until LISTEN is back
            log.warning(
                "sync cache listener lost; cache off until it is back", extra={"error": str(exc)}
            )
        finally:
            cache.disable()
        await asyncio.sleep(retry_seconds)


async def _listen(
    cache: SyncCache, engine: AsyncEngine, dsn: str, *, warm: bool, check_seconds: float
) -> None:
    lost = asyncio.Event()

    def on_lost(_conn: Any) -> None:
        cache.disable()  # at once: from now on a change could go unheard
        lost.set()

    def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        kind, _, ident = payload.partition(":")
        cache.invalidate([(kind, ident)])

    conn = await asyncpg.connect(
        dsn, timeout=10, server_settings={"application_name": LISTENER_NAME}
    )
    try:
        conn.add_termination_listener(on_lost)
        await conn.add_listener(CHANNEL, on_notify)
        cache.enable()  # empty: whatever was cached before LISTEN may have missed a change
        log.info("sync cache listening", extra={"channel": CHANNEL})
        if warm:
            await warm_up(cache, engine)
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), check_seconds)
            if not lost.is_set():
                await conn.fetchval("SELECT 1", timeout=check_seconds)
        raise ConnectionError("LISTEN connection closed")
    finally:
        cache.disable()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close(), 2)
        if not conn.is_closed():
            conn.terminate()


async def warm_up(cache: SyncCache, engine: AsyncEngine, chunk: int = 5000) -> int:
    """Load the most recently updated devices (up to the cache size) and the policies, so a
    replica that just
    started does not send its whole fleet's first syncs to the database. Guarded like any read:
    a device changed meanwhile is skipped. Returns how many were stored."""
    d = devices.c
    epoch = cache.epoch()
    stored = 0
    query = (
        select(d.enrollment_id, d.blueprint_id, d.facts, d.manifest_changed_at)
        .order_by(d.updated_at.desc())
        .limit(cache.size)
        .execution_options(yield_per=chunk)
    )
    async with engine.connect() as conn:
        result = await conn.stream(query)
        async for row in result:
            if not cache.enabled or len(cache) >= cache.size:
                break
            snap = DeviceSnapshot(
                row.blueprint_id, DeviceFacts.model_validate(row.facts), row.manifest_changed_at
            )
            stored += cache.put_device(row.enrollment_id, snap, epoch, only_if_absent=True)
        for row in await conn.execute(select(policies).limit(POLICY_SLOTS)):
            policy = Policy(
                blueprint_id=row.blueprint_id,
                revision=row.revision,
                token=row.token,
                candidates=[Candidate.model_validate(c) for c in row.candidates],
            )
            cache.put_policy(row.blueprint_id, policy, epoch)
    log.info("sync cache warmed", extra={"devices": stored})
    return stored
