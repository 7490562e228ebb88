"""A catalog unit of work on SQLite or PostgreSQL, migrated, for sync tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from catalog.main import SPEC
from catalog.repository import CatalogUnitOfWork
from catalog.settings import CatalogSettings
from managed_os.db import make_engine
from managed_os.migrations import upgrade

FEEDS = Path(__file__).resolve().parents[1] / "data" / "feeds"


def feed(name: str) -> bytes:
    return (FEEDS / name).read_bytes()


def settings(**over: Any) -> CatalogSettings:
    values: dict[str, Any] = {
        "gdmf_url": "",
        "sofa_url": "",
        "fetch_retries": 2,
        "fetch_backoff_seconds": 0.01,
        "fetch_backoff_max_seconds": 0.5,
        "fetch_timeout_seconds": 1.0,
    }
    values.update(over)
    return CatalogSettings(**values)


@asynccontextmanager
async def catalog_uow(url: str) -> AsyncIterator[Callable[[], CatalogUnitOfWork]]:
    engine = make_engine(url)
    await upgrade(SPEC, engine)
    try:
        yield lambda: CatalogUnitOfWork(engine, SPEC.outbox_table, SPEC.inbox_table)
    finally:
        await engine.dispose()
