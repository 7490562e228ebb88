"""Each service's migrations build exactly the schema its models describe, on both backends,
and downgrade cleanly to nothing."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from managed_os.db import make_engine
from managed_os.migrations import alembic_config, upgrade
from managed_os.suite import SPECS, load_spec


@pytest.fixture(params=["sqlite", "postgres"])
def url_for(request, tmp_path):
    if request.param == "sqlite":
        return lambda name: f"sqlite+aiosqlite:///{tmp_path / (name + '.db')}"
    pg = request.getfixturevalue("pg")
    return lambda name: pg.create(f"mos_mig_{name.replace('-', '_')}")


@pytest.mark.parametrize("name", list(SPECS))
async def test_migrations_match_the_models_and_downgrade_to_nothing(name, url_for):
    spec = load_spec(name)
    engine = make_engine(url_for(name))
    try:
        await upgrade(spec, engine)

        def diff(conn: Connection) -> list[object]:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(ctx, spec.metadata))

        async with engine.connect() as conn:
            assert await conn.run_sync(diff) == []

        def down(conn: Connection) -> None:
            cfg = alembic_config(spec.migrations)
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")

        async with engine.begin() as conn:
            await conn.run_sync(down)

        def tables(conn: Connection) -> set[str]:
            from sqlalchemy import inspect

            return set(inspect(conn).get_table_names()) - {"alembic_version"}

        async with engine.connect() as conn:
            assert await conn.run_sync(tables) == set()
    finally:
        await engine.dispose()
