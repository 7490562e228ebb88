"""Alembic migrations, one history per service (`<service>/migrations`).

`upgrade` runs them on an async engine; each service's `env.py` is two lines calling
`run_env(metadata)`, so every service migrates the same way (CLI `managed-os migrate`).
"""

from __future__ import annotations

import asyncio
import importlib
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alembic import command, context, op
from alembic.config import Config
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine


def alembic_config(script_location: str) -> Config:
    """`script_location` is a package such as `catalog.migrations` (or `catalog:migrations`),
    resolved to its directory so it works from a wheel, a checkout or an editable install."""
    package = importlib.import_module(script_location.replace(":", "."))
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(package.__file__ or "").parent))
    return cfg


# Alembic's `context` is a module-level proxy: two migrations interleaving on one event loop
# (several services starting in one process) would trample each other, so they take turns.
_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


async def upgrade(spec: Any, engine: AsyncEngine, revision: str = "head") -> None:
    cfg = alembic_config(spec.migrations)

    def _run(sync_conn: Connection) -> None:
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, revision)

    lock = _locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    async with lock, engine.begin() as conn:
        await conn.run_sync(_run)


async def current(spec: Any, engine: AsyncEngine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    def _read(sync_conn: Connection) -> str | None:
        return MigrationContext.configure(sync_conn).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(_read)


def set_json_type(columns: Sequence[tuple[str, str]], kind: str) -> None:
    """For a migration: make these (table, column)s PostgreSQL `json` or `jsonb` (`kind`),
    converting the documents they hold; the table is rewritten under an exclusive lock, waited
    for at most 10 s (the rest of the migration's transaction keeps that limit). On SQLite
    both are JSON text, and there is nothing to do."""
    if kind not in ("json", "jsonb"):
        raise ValueError(f"not a JSON type: {kind}")
    if op.get_bind().dialect.name != "postgresql":
        return
    limit_lock_waits()
    for table, column in columns:
        op.execute(
            f'ALTER TABLE "{table}" ALTER COLUMN "{column}" TYPE {kind} USING "{column}"::{kind}'
        )


def limit_lock_waits(seconds: int = 10) -> None:
    """For a migration on PostgreSQL: wait at most `seconds` for any lock, for the rest of the
    migration's transaction. A migration that needs a table's lock then fails (the operator
    runs it again) rather than queue behind a long transaction while every reader and writer
    of the table queues behind it. Nothing on SQLite."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"SET LOCAL lock_timeout = '{int(seconds)}s'")


def run_env(metadata: MetaData) -> None:
    """Body of every service's env.py: migrate on the connection `upgrade` provides."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations with `managed-os migrate`, not the alembic CLI")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
