"""Autogenerate a migration for one service against a scratch SQLite database.

usage: .venv/bin/python scripts/new_migration.py <service> "<message>"
Review the generated file: autogenerate is a draft, not a verdict.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from alembic import command
from sqlalchemy.engine import Connection

from managed_os.db import make_engine
from managed_os.migrations import alembic_config, upgrade
from managed_os.suite import load_spec


async def main(service: str, message: str) -> None:
    spec = load_spec(service)
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite+aiosqlite:///{Path(tmp) / 'scratch.db'}")
        await upgrade(spec, engine)
        cfg = alembic_config(spec.migrations)
        cfg.set_main_option("revision_environment", "true")

        def _revise(conn: Connection) -> None:
            cfg.attributes["connection"] = conn
            command.revision(cfg, message=message, autogenerate=True)

        async with engine.begin() as conn:
            await conn.run_sync(_revise)
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
