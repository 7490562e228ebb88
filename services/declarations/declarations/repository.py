"""Declarations storage: blueprints, items and their assignments, self-service requests,
policy revisions, and the catalog read model. Reads used by a recompile are batched (one
query per kind of row for any number of blueprints)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from declarations.models import (
    assignments,
    blueprints,
    known_releases,
    library_items,
    policy_revisions,
    self_service_requests,
)
from declarations.schemas import Blueprint, LibraryItem, PolicyRevision, SelfServiceRequest
from managed_os.db import hold_sqlite_writes, records
from managed_os.events import ReleaseData
from managed_os.uow import SqlUnitOfWork

_items = TypeAdapter(LibraryItem)


class BlueprintRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, bp: Blueprint) -> None:
        await self.conn.execute(insert(blueprints).values(**bp.model_dump()))

    async def get(self, blueprint_id: str) -> Blueprint | None:
        query = select(blueprints).where(blueprints.c.id == blueprint_id)
        row = (await self.conn.execute(query)).first()
        return Blueprint.model_validate(dict(row._mapping)) if row else None

    async def list_all(self) -> list[Blueprint]:
        rows = await self.conn.execute(select(blueprints).order_by(blueprints.c.created_at))
        return [Blueprint.model_validate(r) for r in records(rows)]

    async def lock(self, ids: list[str]) -> None:
        """Take these blueprints' rows for this transaction (PostgreSQL; in id order, so two
        writers never deadlock): their items, assignments and revisions change one writer at
        a time. On SQLite, the database's write lock."""
        await hold_sqlite_writes(self.conn)
        if ids and self.conn.dialect.name == "postgresql":
            await self.conn.execute(
                select(blueprints.c.id)
                .where(blueprints.c.id.in_(sorted(ids)))
                .order_by(blueprints.c.id)
                .with_for_update()
            )

    async def existing_ids(self, ids: list[str]) -> set[str]:
        rows = await self.conn.execute(select(blueprints.c.id).where(blueprints.c.id.in_(ids)))
        return {r.id for r in rows}

    async def save(self, bp: Blueprint) -> None:
        values = bp.model_dump(exclude={"id", "created_at"})
        await self.conn.execute(update(blueprints).where(blueprints.c.id == bp.id).values(values))

    async def delete(self, blueprint_id: str) -> None:
        await self.conn.execute(
            delete(assignments).where(assignments.c.blueprint_id == blueprint_id)
        )
        await self.conn.execute(delete(blueprints).where(blueprints.c.id == blueprint_id))


class ItemRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, item: LibraryItem) -> None:
        await self.conn.execute(insert(library_items).values(**self._row(item)))
        await self._assign(item)

    async def save(self, item: LibraryItem) -> None:
        await self.conn.execute(
            update(library_items).where(library_items.c.id == item.id).values(**self._row(item))
        )
        await self.conn.execute(delete(assignments).where(assignments.c.item_id == item.id))
        await self._assign(item)

    async def delete(self, item_id: str) -> None:
        # Self-service requests stay: they are the audit trail, and outlive the item.
        await self.conn.execute(delete(assignments).where(assignments.c.item_id == item_id))
        await self.conn.execute(delete(library_items).where(library_items.c.id == item_id))

    @staticmethod
    def _row(item: LibraryItem) -> dict[str, Any]:
        data = item.model_dump(mode="json", exclude={"blueprint_ids"})
        data.update(
            created_at=item.created_at,
            updated_at=item.updated_at,
            upgrade_enforced_since=item.upgrade_enforced_since,
        )
        return data

    async def _assign(self, item: LibraryItem) -> None:
        if item.blueprint_ids:
            await self.conn.execute(
                insert(assignments),
                [
                    {"item_id": item.id, "blueprint_id": b, "major": item.major}
                    for b in item.blueprint_ids
                ],
            )

    async def get(self, item_id: str) -> LibraryItem | None:
        items = await self._load(select(library_items).where(library_items.c.id == item_id))
        return items[0] if items else None

    async def list_all(self) -> list[LibraryItem]:
        return await self._load(select(library_items).order_by(library_items.c.created_at))

    async def for_blueprints(self, blueprint_ids: list[str]) -> dict[str, list[LibraryItem]]:
        """The items assigned to each of these blueprints, in two queries."""
        links = (
            await self.conn.execute(
                select(assignments.c.blueprint_id, assignments.c.item_id).where(
                    assignments.c.blueprint_id.in_(blueprint_ids)
                )
            )
        ).all()
        ids = sorted({link.item_id for link in links})
        items = (
            {
                i.id: i
                for i in await self._load(select(library_items).where(library_items.c.id.in_(ids)))
            }
            if ids
            else {}
        )
        result: dict[str, list[LibraryItem]] = {b: [] for b in blueprint_ids}
        for link in links:
            result[link.blueprint_id].append(items[link.item_id])
        return result

    async def holder(
        self, blueprint_id: str, major: int, other_than: str | None = None
    ) -> str | None:
        """The item already assigned to (blueprint, major), if any (ignoring `other_than`)."""
        query = select(assignments.c.item_id).where(
            assignments.c.blueprint_id == blueprint_id, assignments.c.major == major
        )
        if other_than is not None:
            query = query.where(assignments.c.item_id != other_than)
        return await self.conn.scalar(query)

    async def blueprints_with_major(self, major: int) -> list[str]:
        rows = await self.conn.execute(
            select(assignments.c.blueprint_id).where(assignments.c.major == major).distinct()
        )
        return sorted(r.blueprint_id for r in rows)

    async def _load(self, query: Any) -> list[LibraryItem]:
        rows = (await self.conn.execute(query)).all()
        if not rows:
            return []
        links = await self.conn.execute(
            select(assignments.c.item_id, assignments.c.blueprint_id).where(
                assignments.c.item_id.in_([r.id for r in rows])
            )
        )
        by_item: dict[str, list[str]] = defaultdict(list)
        for link in links:
            by_item[link.item_id].append(link.blueprint_id)
        return [
            _items.validate_python({**dict(r._mapping), "blueprint_ids": sorted(by_item[r.id])})
            for r in rows
        ]


class SelfServiceRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, request: SelfServiceRequest) -> None:
        await self.conn.execute(insert(self_service_requests).values(**request.model_dump()))

    async def for_item(self, item_id: str) -> list[SelfServiceRequest]:
        return (await self.for_items([item_id])).get(item_id, [])

    async def for_items(self, item_ids: list[str]) -> dict[str, list[SelfServiceRequest]]:
        t = self_service_requests
        rows = await self.conn.execute(
            select(t).where(t.c.item_id.in_(item_ids)).order_by(t.c.requested_at, t.c.id)
        )
        result: dict[str, list[SelfServiceRequest]] = defaultdict(list)
        for r in records(rows):
            result[r["item_id"]].append(SelfServiceRequest.model_validate(r))
        return result


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

    async def latest_tokens(self, blueprint_ids: list[str]) -> dict[str, tuple[int, str]]:
        """(revision, token) of each blueprint's newest revision, in one query."""
        t = policy_revisions
        newest = (
            select(t.c.blueprint_id, func.max(t.c.revision).label("revision"))
            .where(t.c.blueprint_id.in_(blueprint_ids))
            .group_by(t.c.blueprint_id)
            .subquery()
        )
        rows = await self.conn.execute(
            select(t.c.blueprint_id, t.c.revision, t.c.token).join(
                newest,
                (t.c.blueprint_id == newest.c.blueprint_id) & (t.c.revision == newest.c.revision),
            )
        )
        return {r.blueprint_id: (r.revision, r.token) for r in rows}

    async def latest_page(self, limit: int, offset: int) -> tuple[list[PolicyRevision], int]:
        """The newest revision of every blueprint, by blueprint id, and how many there are."""
        t = policy_revisions
        newest = (
            select(t.c.blueprint_id, func.max(t.c.revision).label("revision"))
            .group_by(t.c.blueprint_id)
            .subquery()
        )
        total = await self.conn.scalar(select(func.count()).select_from(newest))
        rows = await self.conn.execute(
            select(t)
            .join(
                newest,
                (t.c.blueprint_id == newest.c.blueprint_id) & (t.c.revision == newest.c.revision),
            )
            .order_by(t.c.blueprint_id)
            .limit(limit)
            .offset(offset)
        )
        return [PolicyRevision.model_validate(r) for r in records(rows)], int(total or 0)

    async def revisions(self, blueprint_id: str) -> list[PolicyRevision]:
        rows = await self.conn.execute(
            select(policy_revisions)
            .where(policy_revisions.c.blueprint_id == blueprint_id)
            .order_by(policy_revisions.c.revision)
        )
        return [PolicyRevision.model_validate(r) for r in records(rows)]

    async def add_many(self, revisions: list[PolicyRevision]) -> None:
        if revisions:
            # Fields as they are (the candidates are JSON documents already; no second dump).
            await self.conn.execute(insert(policy_revisions), [dict(r) for r in revisions])


VIEW_LOCK_BASE = 0x6D6F5F7669657700  # "mo_view" + major


class ReleaseView:
    """The catalog as this service knows it (from ReleasePublished / ReleaseUpdated, or the
    catalog's REST API at start)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def lock_major(self, major: int) -> None:
        """Serialise, per major, a release arriving with an item being written (PostgreSQL,
        until commit). Without it a consumer could store a new release while an API request
        compiles against the view without it, each missing the other's uncommitted change,
        and the blueprint would keep a stale target until the next release. Take it before
        any blueprint lock (the order the consumer uses), so the two never deadlock."""
        await hold_sqlite_writes(self.conn)
        if self.conn.dialect.name == "postgresql":
            await self.conn.execute(
                text("SELECT pg_advisory_xact_lock(:k)"), {"k": VIEW_LOCK_BASE + major}
            )

    async def upsert(self, rel: ReleaseData, now: datetime) -> bool:
        """Store `rel`; False when it is already stored exactly so (nothing to recompile)."""
        c = known_releases.c
        key = (
            (c.version == rel.version)
            & (c.extra == (rel.extra or ""))
            & (c.build == (rel.build or ""))
        )
        doc = rel.model_dump(mode="json", exclude={"expired", "first_seen"})
        current = await self.conn.scalar(select(c.release).where(key))
        if current is not None and current == doc:
            return False
        await self.conn.execute(delete(known_releases).where(key))
        await self.conn.execute(
            insert(known_releases).values(
                version=rel.version,
                extra=rel.extra or "",
                build=rel.build or "",
                major=rel.major,
                release=doc,
                updated_at=now,
            )
        )
        return True

    async def by_majors(self, majors: set[int]) -> list[ReleaseData]:
        rows = await self.conn.execute(
            select(known_releases.c.release).where(known_releases.c.major.in_(sorted(majors)))
        )
        return [ReleaseData.model_validate(r.release) for r in rows]

    async def by_major(self, major: int) -> list[ReleaseData]:
        return await self.by_majors({major})

    async def count(self) -> int:
        return int(await self.conn.scalar(select(func.count()).select_from(known_releases)) or 0)


class DeclarationsUnitOfWork(SqlUnitOfWork):
    blueprints: BlueprintRepository
    items: ItemRepository
    requests: SelfServiceRepository
    policies: PolicyRepository
    releases: ReleaseView

    def _bind(self, conn: AsyncConnection) -> None:
        self.blueprints = BlueprintRepository(conn)
        self.items = ItemRepository(conn)
        self.requests = SelfServiceRepository(conn)
        self.policies = PolicyRepository(conn)
        self.releases = ReleaseView(conn)
