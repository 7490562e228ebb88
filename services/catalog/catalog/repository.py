"""Release and source storage."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from catalog.models import releases, sources
from managed_os.events import ReleaseData
from managed_os.uow import SqlUnitOfWork
from managed_os.versions import parse_version


def _row_to_release(row: Any) -> ReleaseData:
    return ReleaseData(
        version=row.version,
        extra=row.extra,
        build=row.build,
        prerequisite_build=row.prerequisite_build,
        kind=row.kind,
        major=row.major,
        release_date=row.release_date,
        expiration_date=row.expiration_date,
        supported_devices=list(row.supported_devices),
        sources=list(row.sources),
        first_seen=row.first_seen,
    )


class ReleaseRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def all(self) -> list[ReleaseData]:
        rows = await self.conn.execute(select(releases))
        return [_row_to_release(r) for r in rows]

    async def by_major(self, major: int) -> list[ReleaseData]:
        rows = await self.conn.execute(select(releases).where(releases.c.major == major))
        return [_row_to_release(r) for r in rows]

    async def add(self, rel: ReleaseData, now: datetime) -> None:
        v = parse_version(rel.version)
        await self.conn.execute(
            insert(releases).values(
                **self._columns(rel), minor=v.minor, patch=v.patch, first_seen=now, updated_at=now
            )
        )

    async def replace(self, rel: ReleaseData, now: datetime) -> None:
        await self.conn.execute(
            update(releases)
            .where(releases.c.version == rel.version, releases.c.build == rel.build)
            .values(**self._columns(rel), updated_at=now)
        )

    @staticmethod
    def _columns(rel: ReleaseData) -> dict[str, Any]:
        return {
            "version": rel.version,
            "extra": rel.extra,
            "build": rel.build,
            "prerequisite_build": rel.prerequisite_build,
            "kind": rel.kind,
            "major": rel.major,
            "release_date": rel.release_date,
            "expiration_date": rel.expiration_date,
            "supported_devices": rel.supported_devices,
            "sources": rel.sources,
        }


class SourceRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def all(self) -> list[dict[str, Any]]:
        rows = await self.conn.execute(select(sources).order_by(sources.c.name))
        return [dict(r._mapping) for r in rows]

    async def record(self, name: str, url: str, now: datetime, error: str | None) -> None:
        exists = await self.conn.scalar(select(sources.c.name).where(sources.c.name == name))
        values: dict[str, Any] = {"url": url, "last_attempt": now, "ok": error is None}
        if error is None:
            values["last_success"] = now
        values["last_error"] = error
        if exists:
            await self.conn.execute(update(sources).where(sources.c.name == name).values(**values))
        else:
            await self.conn.execute(insert(sources).values(name=name, **values))


class CatalogUnitOfWork(SqlUnitOfWork):
    releases: ReleaseRepository
    sources: SourceRepository

    def _bind(self, conn: AsyncConnection) -> None:
        self.releases = ReleaseRepository(conn)
        self.sources = SourceRepository(conn)
