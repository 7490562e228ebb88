"""Declarations storage: blueprints, items and their assignments, policy revisions, and the
catalog read model."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from declarations.models import (
    assignments,
    blueprints,
    known_releases,
    library_items,
    policy_revisions,
)
from declarations.schemas import Blueprint, LibraryItem, PolicyRevision
from managed_os.events import ReleaseData
from managed_os.uow import SqlUnitOfWork

_items = TypeAdapter(LibraryItem)


class BlueprintRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, bp: Blueprint) -> None:
        await self.conn.execute(insert(blueprints).values(**bp.model_dump()))

    async def get(self, blueprint_id: str) -> Blueprint | None:
        row = (
            await self.conn.execute(select(blueprints).where(blueprints.c.id == blueprint_id))
        ).first()
        return Blueprint.model_validate(dict(row._mapping)) if row else None

    async def list_all(self) -> list[Blueprint]:
        rows = await self.conn.execute(select(blueprints).order_by(blueprints.c.created_at))
        return [Blueprint.model_validate(dict(r._mapping)) for r in rows]

    async def existing_ids(self, ids: list[str]) -> set[str]:
        rows = await self.conn.execute(select(blueprints.c.id).where(blueprints.c.id.in_(ids)))
        return {r.id for r in rows}


class ItemRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, item: LibraryItem) -> None:
        data = item.model_dump(mode="json", exclude={"blueprint_ids"})
        data.update(
            created_at=item.created_at,
            updated_at=item.updated_at,
            upgrade_enforced_since=item.upgrade_enforced_since,
        )
        await self.conn.execute(insert(library_items).values(**data))
        for bp in item.blueprint_ids:
            await self.conn.execute(
                insert(assignments).values(item_id=item.id, blueprint_id=bp, major=item.major)
            )

    async def get(self, item_id: str) -> LibraryItem | None:
        row = (
            await self.conn.execute(select(library_items).where(library_items.c.id == item_id))
        ).first()
        return await self._hydrate(row) if row else None

    async def list_all(self) -> list[LibraryItem]:
        rows = (
            await self.conn.execute(select(library_items).order_by(library_items.c.created_at))
        ).all()
        return [await self._hydrate(r) for r in rows]

    async def for_blueprint(self, blueprint_id: str) -> list[LibraryItem]:
        rows = (
            await self.conn.execute(
                select(library_items)
                .join(assignments, assignments.c.item_id == library_items.c.id)
                .where(assignments.c.blueprint_id == blueprint_id)
            )
        ).all()
        return [await self._hydrate(r) for r in rows]

    async def holder(self, blueprint_id: str, major: int) -> str | None:
        """The item already assigned to (blueprint, major), if any."""
        return await self.conn.scalar(
            select(assignments.c.item_id).where(
                assignments.c.blueprint_id == blueprint_id, assignments.c.major == major
            )
        )

    async def blueprints_with_major(self, major: int) -> list[str]:
        rows = await self.conn.execute(
            select(assignments.c.blueprint_id).where(assignments.c.major == major).distinct()
        )
        return sorted(r.blueprint_id for r in rows)

    async def _hydrate(self, row: Any) -> LibraryItem:
        bps = await self.conn.execute(
            select(assignments.c.blueprint_id).where(assignments.c.item_id == row.id)
        )
        data = dict(row._mapping)
        data["blueprint_ids"] = sorted(r.blueprint_id for r in bps)
        return _items.validate_python(data)


class PolicyRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def latest(self, blueprint_id: str) -> PolicyRevision | None:
        row = (
            await self.conn.execute(
                select(policy_revisions)
                .where(policy_revisions.c.blueprint_id == blueprint_id)
                .order_by(policy_revisions.c.revision.desc())
                .limit(1)
            )
        ).first()
        return PolicyRevision.model_validate(dict(row._mapping)) if row else None

    async def revisions(self, blueprint_id: str) -> list[PolicyRevision]:
        rows = await self.conn.execute(
            select(policy_revisions)
            .where(policy_revisions.c.blueprint_id == blueprint_id)
            .order_by(policy_revisions.c.revision)
        )
        return [PolicyRevision.model_validate(dict(r._mapping)) for r in rows]

    async def add(self, rev: PolicyRevision) -> None:
        await self.conn.execute(insert(policy_revisions).values(**rev.model_dump()))


class ReleaseView:
    """The catalog as this service knows it (from ReleasePublished / ReleaseUpdated)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def upsert(self, rel: ReleaseData, now: datetime) -> None:
        c = known_releases.c
        key = (
            (c.version == rel.version)
            & (c.extra == (rel.extra or ""))
            & (c.build == (rel.build or ""))
        )
        await self.conn.execute(delete(known_releases).where(key))
        await self.conn.execute(
            insert(known_releases).values(
                version=rel.version,
                extra=rel.extra or "",
                build=rel.build or "",
                major=rel.major,
                release=rel.model_dump(mode="json"),
                updated_at=now,
            )
        )

    async def by_major(self, major: int) -> list[ReleaseData]:
        rows = await self.conn.execute(
            select(known_releases.c.release).where(known_releases.c.major == major)
        )
        return [ReleaseData.model_validate(r.release) for r in rows]


class DeclarationsUnitOfWork(SqlUnitOfWork):
    blueprints: BlueprintRepository
    items: ItemRepository
    policies: PolicyRepository
    releases: ReleaseView

    def _bind(self, conn: AsyncConnection) -> None:
        self.blueprints = BlueprintRepository(conn)
        self.items = ItemRepository(conn)
        self.policies = PolicyRepository(conn)
        self.releases = ReleaseView(conn)


__all__ = ["DeclarationsUnitOfWork", "update"]
