"""Idempotent consumption: a unique (consumer, event id) row, written in the same
transaction as the event's effects. Seeing an event again finds the row and does nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from sqlalchemy import Table, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from managed_os.cloudevents import CloudEvent

# Rows per multi-row INSERT: SQLite allows 32,766 bound parameters, three per row here.
_CHUNK = 5000


class InboxStore(Protocol):
    """Contract: `record` returns True the first time a (consumer, event id) pair is seen in a
    committed transaction and False afterwards; a rolled-back record leaves no trace."""

    async def record(self, consumer: str, event_id: str) -> bool: ...

    async def record_many(self, consumer: str, event_ids: Sequence[str]) -> set[str]:
        """`record` for a batch: the ids seen for the first time (duplicates within the batch
        count once)."""
        ...


class SqlInboxStore:
    def __init__(self, conn: AsyncConnection, table: Table) -> None:
        self.conn, self.table = conn, table

    async def record(self, consumer: str, event_id: str) -> bool:
        dialect_insert = pg_insert if self.conn.dialect.name == "postgresql" else sqlite_insert
        stmt = (
            dialect_insert(self.table)
            .values(consumer=consumer, event_id=event_id, processed_at=datetime.now(UTC))
            .on_conflict_do_nothing()
        )
        result = await self.conn.execute(stmt)
        return bool(result.rowcount)

    async def record_many(self, consumer: str, event_ids: Sequence[str]) -> set[str]:
        if not event_ids:
            return set()
        unique = list(dict.fromkeys(event_ids))
        now = datetime.now(UTC)
        if self.conn.dialect.name == "postgresql":
            # One statement whatever the batch size: the ids travel as one array.
            inserted = await self.conn.execute(
                text(
                    f"INSERT INTO {self.table.name} (consumer, event_id, processed_at) "
                    "SELECT :consumer, e, :now FROM unnest(CAST(:ids AS text[])) AS e "
                    "ON CONFLICT DO NOTHING RETURNING event_id"
                ),
                {"consumer": consumer, "now": now, "ids": unique},
            )
            return set(inserted.scalars())
        stmt = sqlite_insert(self.table).on_conflict_do_nothing().returning(self.table.c.event_id)
        fresh: set[str] = set()
        for start in range(0, len(unique), _CHUNK):
            rows = [
                {"consumer": consumer, "event_id": e, "processed_at": now}
                for e in unique[start : start + _CHUNK]
            ]
            fresh.update((await self.conn.execute(stmt, rows)).scalars())
        return fresh


class MemoryInboxStore:
    def __init__(self, committed: set[tuple[str, str]]) -> None:
        self.committed = committed
        self.staged: set[tuple[str, str]] = set()

    async def record(self, consumer: str, event_id: str) -> bool:
        key = (consumer, event_id)
        if key in self.committed or key in self.staged:
            return False
        self.staged.add(key)
        return True

    async def record_many(self, consumer: str, event_ids: Sequence[str]) -> set[str]:
        return {e for e in dict.fromkeys(event_ids) if await self.record(consumer, e)}

    def apply(self) -> None:
        self.committed |= self.staged
        self.staged = set()


class HasInbox(Protocol):
    inbox: InboxStore

    async def __aenter__(self) -> HasInbox: ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def commit(self) -> None: ...


U = TypeVar("U", bound=HasInbox)


def idempotent(
    consumer: str,
    uow_factory: Callable[[], U],
    apply: Callable[[U, CloudEvent], Awaitable[None]],
) -> Callable[[CloudEvent], Awaitable[None]]:
    """Wrap `apply` so each event takes effect once, in one transaction with its inbox row."""

    async def handle(event: CloudEvent) -> None:
        uow = uow_factory()
        async with uow:
            if not await uow.inbox.record(consumer, event.id):
                return
            await apply(uow, event)
            await uow.commit()

    return handle
