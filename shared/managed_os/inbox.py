"""Idempotent consumption: a unique (consumer, event id) row, written in the same
transaction as the event's effects. Seeing an event again finds the row and does nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from managed_os.cloudevents import CloudEvent


class InboxStore(Protocol):
    """Contract: `record` returns True the first time a (consumer, event id) pair is seen in a
    committed transaction and False afterwards; a rolled-back record leaves no trace."""

    async def record(self, consumer: str, event_id: str) -> bool: ...


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
