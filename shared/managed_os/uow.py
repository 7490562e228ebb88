"""Unit of work: one transaction per command or consumed event; the handler commits once.

Services subclass `SqlUnitOfWork` and build their repositories in `_bind`, all on the same
connection, so state changes and outbox rows commit (or roll back) together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction

from managed_os.inbox import InboxStore, MemoryInboxStore, SqlInboxStore
from managed_os.outbox import MemoryOutboxStore, OutboxRecord, OutboxStore, SqlOutboxStore


class SqlUnitOfWork:
    outbox: OutboxStore
    inbox: InboxStore

    def __init__(
        self,
        engine: AsyncEngine,
        outbox_table: Table,
        inbox_table: Table,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self._tables = (outbox_table, inbox_table)
        self._on_commit = on_commit
        self._conn: AsyncConnection | None = None
        self._tx: AsyncTransaction | None = None

    @property
    def conn(self) -> AsyncConnection:
        if self._conn is None:
            raise RuntimeError("unit of work used outside `async with`")
        return self._conn

    async def __aenter__(self) -> Self:
        self._conn = await self.engine.connect()
        self._tx = await self._conn.begin()
        self.outbox = SqlOutboxStore(self._conn, self._tables[0])
        self.inbox = SqlInboxStore(self._conn, self._tables[1])
        self._bind(self._conn)
        return self

    def _bind(self, conn: AsyncConnection) -> None:
        """Subclasses attach their repositories to `conn` here."""

    async def commit(self) -> None:
        assert self._tx is not None
        await self._tx.commit()
        self._tx = await self.conn.begin()
        if self._on_commit is not None:
            self._on_commit()

    async def rollback(self) -> None:
        if self._tx is not None and self._tx.is_active:
            await self._tx.rollback()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.rollback()
        finally:
            if self._conn is not None:
                await self._conn.close()
            self._conn = self._tx = None


@dataclass
class MemoryState:
    """Committed state shared by the in-memory units of work of one test."""

    outbox_rows: list[OutboxRecord] = field(default_factory=list)
    processed: set[tuple[str, str]] = field(default_factory=set)
    counter: list[int] = field(default_factory=lambda: [0])


class MemoryUnitOfWork:
    """In-memory unit of work with the same outbox/inbox contract, for unit tests. Create one
    per transaction over a shared `MemoryState`; changes are staged until `commit`."""

    outbox: MemoryOutboxStore
    inbox: MemoryInboxStore

    def __init__(self, state: MemoryState | None = None) -> None:
        self.state = state or MemoryState()

    async def __aenter__(self) -> Self:
        self.outbox = MemoryOutboxStore(self.state.outbox_rows, self.state.counter)
        self.inbox = MemoryInboxStore(self.state.processed)
        return self

    async def commit(self) -> None:
        self.outbox.apply()
        self.inbox.apply()

    async def __aexit__(self, *exc: object) -> None:
        self.outbox.staged, self.inbox.staged = [], set()
