"""Each service's migrations build exactly the schema its models describe, on both backends,
and downgrade cleanly to nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection

from managed_os.db import UtcDateTime, make_engine
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
            if conn.dialect.name == "postgresql":
                # Storage options, which the comparison above does not look at.
                query = text("SELECT relname, reloptions FROM pg_class WHERE relname = ANY(:t)")
                stored = {
                    r[0]: sorted(r[1] or [])
                    for r in await conn.execute(query, {"t": list(spec.metadata.tables)})
                }
                assert stored == {
                    name: sorted(
                        f"{k}={v}"
                        for k, v in (table.dialect_options["postgresql"]["with"] or {}).items()
                    )
                    for name, table in spec.metadata.tables.items()
                }

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


async def test_the_previous_release_reads_and_writes_the_documents_turned_to_json(pg):
    """`device_inputs.inputs` and `outbox.envelope` became `json` (compliance 7b1e4c9d2f60):
    a replica of the previous release, still declaring them jsonb, writes jsonb values into
    them and reads them back decoded, so it keeps working during a rolling update."""
    from sqlalchemy import Column, MetaData, String, Table, insert, select

    from managed_os.db import JsonDoc

    engine = make_engine(pg.create("mos_mig_json_compat"))
    try:
        await upgrade(load_spec("compliance"), engine)
        old = MetaData()  # the two tables as the previous release declares them
        inputs = Table(
            "device_inputs", old, Column("enrollment_id", String), Column("inputs", JsonDoc)
        )
        outbox = Table(
            "outbox",
            old,
            *(Column(c, String) for c in ("topic", "key", "event_id", "event_type")),
            Column("envelope", JsonDoc),
            Column("created_at", UtcDateTime),
        )
        document = {"facts": {"os_version": "26.4.1"}, "expected": [], "n": 2**70}
        async with engine.begin() as conn:
            await conn.execute(insert(inputs).values(enrollment_id="MAC-1", inputs=document))
            await conn.execute(
                insert(outbox).values(
                    topic="t",
                    key="k",
                    event_id="e",
                    event_type="x",
                    envelope=document,
                    created_at=datetime.now(UTC),
                )
            )
            # ... and its bulk upsert, which casts each document to jsonb itself
            await conn.execute(
                text(
                    "INSERT INTO device_inputs (enrollment_id, inputs) SELECT e, CAST(d AS JSONB) "
                    "FROM (VALUES ('MAC-1', :doc), ('MAC-2', :doc)) AS v(e, d) "
                    "ON CONFLICT (enrollment_id) DO UPDATE SET inputs = EXCLUDED.inputs"
                ),
                {"doc": '{"n": 3}'},
            )
        async with engine.connect() as conn:
            read = await conn.execute(select(inputs.c.inputs).order_by(inputs.c.enrollment_id))
            assert read.scalars().all() == [{"n": 3}, {"n": 3}]
            assert (await conn.execute(select(outbox.c.envelope))).scalar_one() == document
            kinds = await conn.execute(
                text(
                    "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid IN ('device_inputs'::regclass, 'outbox'::regclass) "
                    "AND attname IN ('inputs', 'envelope')"
                )
            )
            assert sorted(kinds.scalars()) == ["json", "json"]
    finally:
        await engine.dispose()
