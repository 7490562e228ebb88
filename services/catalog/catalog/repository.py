"""Catalog storage: releases, per-source state, and the board-id device map."""

from __future__ import annotations

import asyncio
import weakref
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import and_, insert, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from catalog.models import board_devices, releases, sources
from managed_os.db import records
from managed_os.events import ReleaseData
from managed_os.uow import SqlUnitOfWork
from managed_os.versions import major_name, parse_version


def _release(row: Any) -> ReleaseData:
    return ReleaseData(
        version=row.version,
        extra=row.extra or None,
        build=row.build or None,
        prerequisite_build=row.prerequisite_build,
        kind=row.kind,
        major=row.major,
        major_name=major_name(row.major),
        release_date=row.release_date,
        expiration_date=row.expiration_date,
        supported_devices=list(row.supported_devices),
        devices_known=bool(row.devices_known),
        listed_by_apple=row.listed_by_apple,
        cves=row.cves,
        exploited_cves=list(row.exploited_cves or []),
        security_info=row.security_info,
        sources=list(row.sources),
        first_seen=row.first_seen,
    )


def _columns(rel: ReleaseData) -> dict[str, Any]:
    return {
        "version": rel.version,
        "extra": rel.extra or "",
        "build": rel.build or "",
        "prerequisite_build": rel.prerequisite_build,
        "kind": rel.kind,
        "major": rel.major,
        "release_date": rel.release_date,
        "expiration_date": rel.expiration_date,
        "supported_devices": rel.supported_devices,
        "devices_known": rel.devices_known,
        "listed_by_apple": rel.listed_by_apple,
        "cves": rel.cves,
        "exploited_cves": rel.exploited_cves,
        "security_info": rel.security_info,
        "sources": rel.sources,
    }


class ReleaseRepository:
    """Releases are only added or updated, never deleted (expiry is a flag)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def all(self) -> list[ReleaseData]:
        return [_release(r) for r in await self.conn.execute(select(releases))]

    async def by_major(self, major: int) -> list[ReleaseData]:
        rows = await self.conn.execute(select(releases).where(releases.c.major == major))
        return [_release(r) for r in rows]

    async def by_build(self, build: str) -> list[ReleaseData]:
        rows = await self.conn.execute(select(releases).where(releases.c.build == build))
        return [_release(r) for r in rows]

    async def add(self, rel: ReleaseData, now: datetime) -> None:
        v = parse_version(rel.version)
        await self.conn.execute(
            insert(releases).values(
                **_columns(rel), minor=v.minor, patch=v.patch, first_seen=now, updated_at=now
            )
        )

    async def replace(self, rel: ReleaseData, now: datetime) -> None:
        c = releases.c
        await self.conn.execute(
            update(releases)
            .where(
                c.version == rel.version, c.extra == (rel.extra or ""), c.build == (rel.build or "")
            )
            .values(**_columns(rel), updated_at=now)
        )


class SourceState(BaseModel):
    name: str
    url: str
    ok: bool = False
    last_attempt: datetime | None = None
    last_success: datetime | None = None
    last_changed: datetime | None = None
    last_error: str | None = None
    used_url: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    body_sha256: str | None = None
    held_sha256: str | None = None
    next_due: datetime | None = None
    releases_listed: int = 0


# Everything but the (large) observations document: a re-sync that finds nothing new reads
# and writes only this.
_STATE_COLUMNS = [c for c in sources.c if c.name != "observations"]


class SourceRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def get(self, name: str) -> SourceState | None:
        row = (
            await self.conn.execute(select(*_STATE_COLUMNS).where(sources.c.name == name))
        ).first()
        return SourceState.model_validate(dict(row._mapping)) if row else None

    async def all(self) -> list[SourceState]:
        rows = await self.conn.execute(select(*_STATE_COLUMNS).order_by(sources.c.name))
        return [SourceState.model_validate(r) for r in records(rows)]

    async def observations(self) -> dict[str, list[ReleaseData] | None]:
        """Each source's last good view of the releases (None if it never had one)."""
        rows = await self.conn.execute(select(sources.c.name, sources.c.observations))
        return {
            r.name: None
            if r.observations is None
            else [ReleaseData.model_validate(o) for o in r.observations]
            for r in rows
        }

    async def ensure(self, name: str, url: str) -> None:
        dialect_insert = pg_insert if self.conn.dialect.name == "postgresql" else sqlite_insert
        await self.conn.execute(
            dialect_insert(sources).values(name=name, url=url, ok=False).on_conflict_do_nothing()
        )

    async def hold(self, name: str, digest: str | None) -> None:
        await self.conn.execute(
            update(sources).where(sources.c.name == name).values(held_sha256=digest)
        )

    async def reschedule(self, name: str, next_due: datetime) -> None:
        await self.conn.execute(
            update(sources).where(sources.c.name == name).values(next_due=next_due)
        )

    async def failed(self, name: str, url: str, now: datetime, error: str) -> None:
        """Record a failed attempt; the last good observations stay."""
        await self.ensure(name, url)
        await self.conn.execute(
            update(sources)
            .where(sources.c.name == name)
            .values(url=url, last_attempt=now, ok=False, last_error=error)
        )

    async def succeeded(self, name: str, url: str, now: datetime, **changes: Any) -> None:
        """Record a good attempt; `changes` carries new validators and observations, if any."""
        await self.ensure(name, url)
        if "observations" in changes:
            changes["observations"] = [o.model_dump(mode="json") for o in changes["observations"]]
            changes["releases_listed"] = len(changes["observations"])
            changes["last_changed"] = now
        await self.conn.execute(
            update(sources)
            .where(sources.c.name == name)
            .values(
                url=url, last_attempt=now, last_success=now, ok=True, last_error=None, **changes
            )
        )

    async def claim_due(self, name: str, url: str, now: datetime, next_due: datetime) -> bool:
        """Atomically take this source's next scheduled sync (one replica wins)."""
        await self.ensure(name, url)
        c = sources.c
        result = await self.conn.execute(
            update(sources)
            .where(and_(c.name == name, or_(c.next_due.is_(None), c.next_due <= now)))
            .values(next_due=next_due)
        )
        return bool(result.rowcount)


class BoardDevice(BaseModel):
    board_id: str
    model_identifier: str | None = None
    marketing_name: str | None = None


class BoardDeviceRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def all(self) -> list[BoardDevice]:
        rows = await self.conn.execute(select(board_devices).order_by(board_devices.c.board_id))
        return [BoardDevice.model_validate(r) for r in records(rows)]

    async def upsert_changed(self, devices: list[BoardDevice]) -> int:
        """Insert new and update changed entries; returns how many rows were written."""
        known = {d.board_id: d for d in await self.all()}
        written = 0
        for device in devices:
            old = known.get(device.board_id)
            if old == device:
                continue
            if old is None:
                await self.conn.execute(insert(board_devices).values(**device.model_dump()))
            else:
                await self.conn.execute(
                    update(board_devices)
                    .where(board_devices.c.board_id == device.board_id)
                    .values(**device.model_dump())
                )
            written += 1
        return written


# Writers of the merged catalog take turns: one advisory lock per PostgreSQL database, one
# asyncio lock per engine within a process (SQLite serialises writers, but a transaction
# that read before another committed would then fail to write).
CATALOG_LOCK_ID = 0x6D6F5F636174616C  # "mo_catal"
_process_locks: weakref.WeakKeyDictionary[object, asyncio.Lock] = weakref.WeakKeyDictionary()


class CatalogUnitOfWork(SqlUnitOfWork):
    releases: ReleaseRepository
    sources: SourceRepository
    devices: BoardDeviceRepository

    def writer_lock(self) -> asyncio.Lock:
        """Hold this around a merging transaction (see `lock_catalog`)."""
        return _process_locks.setdefault(self.engine.sync_engine, asyncio.Lock())

    async def lock_catalog(self) -> None:
        """Within the transaction: wait for any other replica merging into this catalog."""
        if self.conn.dialect.name == "postgresql":
            await self.conn.execute(
                text("SELECT pg_advisory_xact_lock(:k)"), {"k": CATALOG_LOCK_ID}
            )

    def _bind(self, conn: AsyncConnection) -> None:
        self.releases = ReleaseRepository(conn)
        self.sources = SourceRepository(conn)
        self.devices = BoardDeviceRepository(conn)
