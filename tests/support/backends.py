"""Unit-of-work factories for the storage contract suites: memory, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from managed_os.db import add_messaging_tables, make_engine
from managed_os.outbox import OutboxStore
from managed_os.uow import MemoryState, MemoryUnitOfWork, SqlUnitOfWork

metadata = MetaData()
outbox_table, inbox_table = add_messaging_tables(metadata)
# A stand-in for a service's own state, to check it commits with the outbox/inbox rows.
effects = Table(
    "effects",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("note", String(100), nullable=False),
)


class EffectLog:
    def __init__(self, conn: AsyncConnection | None = None, memory: list[str] | None = None):
        self.conn, self.memory = conn, memory

    async def add(self, note: str) -> None:
        if self.conn is not None:
            await self.conn.execute(insert(effects).values(note=note))
        else:
            assert self.memory is not None
            self.memory.append(note)

    async def all(self) -> list[str]:
        if self.conn is not None:
            return [r.note for r in await self.conn.execute(select(effects).order_by(effects.c.id))]
        assert self.memory is not None
        return list(self.memory)


class ProbeUnitOfWork(SqlUnitOfWork):
    effects: EffectLog

    def _bind(self, conn: AsyncConnection) -> None:
        self.effects = EffectLog(conn)


class MemoryProbeUnitOfWork(MemoryUnitOfWork):
    """Adds the effect log to the in-memory unit of work (committed list in `state`)."""

    def __init__(self, state: MemoryState, effects_committed: list[str]) -> None:
        super().__init__(state)
        self.committed = effects_committed

    async def __aenter__(self) -> MemoryProbeUnitOfWork:
        await super().__aenter__()
        self.effects = EffectLog(memory=list(self.committed))
        return self

    async def commit(self) -> None:
        await super().commit()
        assert self.effects.memory is not None
        self.committed[:] = self.effects.memory


@asynccontextmanager
async def sql_engine(url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    try:
        yield engine
    finally:
        await engine.dispose()


@asynccontextmanager
async def uow_factory(backend: str, tmp_path: Path, pg: Any) -> AsyncIterator[Callable[[], Any]]:
    """Yields a zero-argument factory of fresh units of work on `backend`."""
    if backend == "memory":
        state, committed = MemoryState(), []  # type: ignore[var-annotated]
        yield lambda: MemoryProbeUnitOfWork(state, committed)
        return
    url = f"sqlite+aiosqlite:///{tmp_path / 'contract.db'}" if backend == "sqlite" else pg.create()
    async with sql_engine(url) as engine:
        yield lambda: ProbeUnitOfWork(engine, outbox_table, inbox_table)


async def undelivered(outbox: OutboxStore) -> int:
    """Events in the outbox not yet delivered (read as a relay reads them)."""
    return len(await outbox.pending(1_000_000))
