"""What the benchmarks share: a fresh, migrated PostgreSQL database per measurement."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from managed_os.db import make_engine
from managed_os.migrations import upgrade
from managed_os.service import ServiceSpec

PG = os.environ.get("MOS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@asynccontextmanager
async def fresh_database(spec: ServiceSpec) -> AsyncIterator[AsyncEngine]:
    """An engine on a new database with `spec`'s migrations applied; dropped afterwards."""
    name = f"mos_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = PG.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + f"/{name}"
    engine = make_engine(url)
    try:
        await upgrade(spec, engine)
        yield engine
    finally:
        await engine.dispose()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()
