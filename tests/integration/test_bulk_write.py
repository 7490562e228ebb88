"""`managed_os.db.bulk_write` on SQLite and PostgreSQL: every column type the services use
round-trips exactly, upserts replace the other columns, and bad rows are refused whole."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from pydantic import TypeAdapter
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    select,
)
from sqlalchemy.exc import DBAPIError, StatementError

from managed_os.db import JsonDoc, JsonText, UtcDateTime, bulk_write, make_engine

metadata = MetaData()
things = Table(
    "things",
    metadata,
    Column("id", String(20), primary_key=True),
    Column("n", Integer),
    Column("big", BigInteger),
    Column("flag", Boolean),
    Column("day", Date),
    Column("at", UtcDateTime),
    Column("note", Text),
    Column("doc", JsonDoc),
)


@pytest.fixture(params=["sqlite", "postgres"])
async def engine(request: pytest.FixtureRequest, tmp_path):
    if request.param == "postgres":
        url = request.getfixturevalue("pg").create()
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'bulk.db'}"
    eng = make_engine(url)
    async with eng.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield eng
    await eng.dispose()


def row(i: int, **over):
    base = {
        "id": f"t-{i}",
        "n": i,
        "big": 2**62 + i,
        "flag": i % 2 == 0,
        "day": date(2026, 11, 1) + timedelta(days=i),
        "at": datetime(2026, 11, 29, 12, 0, 0, 123456, tzinfo=UTC) + timedelta(seconds=i),
        "note": 'quote " backslash \\ tab \t newline \n emoji 🍏 and {braces}, commas',
        "doc": {"nested": [1, 2.5, None, True, "x"], "huge": 10**30, "s": "é"},
    }
    return {**base, **over}


async def read(engine):
    async with engine.connect() as conn:
        rows = await conn.execute(select(things).order_by(things.c.id))
        return [dict(r._mapping) for r in rows]


async def test_rows_round_trip_exactly_and_upserts_replace_the_rest(engine):
    rows = [row(i) for i in range(3)] + [row(3, n=None, at=None, doc=None, note=None)]
    async with engine.begin() as conn:
        await bulk_write(conn, things, rows)
    assert await read(engine) == rows
    # A time with another offset is stored as the same instant, read back in UTC.
    paris = timezone(timedelta(hours=1))
    changed = [row(1, n=99, doc={"new": True}, at=datetime(2026, 12, 1, 13, tzinfo=paris))]
    async with engine.begin() as conn:
        await bulk_write(conn, things, [*changed, row(4)], keys=["id"])
    got = {r["id"]: r for r in await read(engine)}
    assert got["t-1"]["n"] == 99 and got["t-1"]["doc"] == {"new": True}
    assert got["t-1"]["at"] == datetime(2026, 12, 1, 12, tzinfo=UTC)
    assert all(r["at"].utcoffset() == timedelta(0) for r in got.values() if r["at"])
    assert got["t-0"] == rows[0] and got["t-4"] == row(4) and len(got) == 5
    # An offset with seconds (Amsterdam's local mean time in 1900: +00:19:32) is exact too.
    lmt = datetime(1900, 6, 1, 12, tzinfo=timezone(timedelta(minutes=19, seconds=32)))
    async with engine.begin() as conn:
        await bulk_write(conn, things, [row(5, at=lmt)])
    assert {r["id"]: r["at"] for r in await read(engine)}["t-5"] == lmt
    # A zero offset under another tzinfo (pydantic's own, for parsed times) is written as is.
    parsed = TypeAdapter(datetime).validate_python("2026-12-01T12:00:00.5Z")
    zero = datetime(2026, 12, 1, 12, 0, 1, tzinfo=timezone(timedelta(0)))
    async with engine.begin() as conn:
        await bulk_write(conn, things, [row(6, at=parsed), row(7, at=zero)])
    got = {r["id"]: r["at"] for r in await read(engine)}
    assert (got["t-6"], got["t-7"]) == (parsed, zero) and parsed.tzinfo is not UTC


async def test_a_document_given_as_json_text_is_stored_as_that_document(engine):
    text = JsonText('{"nested": [1, 2.5, null, true, "x"], "huge": 1%s}' % ("0" * 30))
    async with engine.begin() as conn:
        await bulk_write(conn, things, [row(0, doc=text), row(1, doc=JsonText('"s"'))])
        await bulk_write(conn, things, [row(1, doc=JsonText("[1, 2]"))], keys=["id"])
    got = {r["id"]: r["doc"] for r in await read(engine)}
    assert got == {"t-0": {"nested": [1, 2.5, None, True, "x"], "huge": 10**30}, "t-1": [1, 2]}
    # A plain str is a JSON string as before.
    async with engine.begin() as conn:
        await bulk_write(conn, things, [row(2, doc="[1, 2]")])
    assert {r["id"]: r["doc"] for r in await read(engine)}["t-2"] == "[1, 2]"


async def test_a_naive_time_or_an_over_long_value_is_refused_and_nothing_is_written(engine):
    async with engine.begin() as conn:
        await bulk_write(conn, things, [row(0)])
    with pytest.raises((ValueError, StatementError), match="naive"):
        async with engine.begin() as conn:
            await bulk_write(conn, things, [row(1), row(2, at=datetime(2026, 11, 29, 12))])
    with pytest.raises((ValueError, StatementError)):  # a row without a column
        async with engine.begin() as conn:
            short = {k: v for k, v in row(5).items() if k != "note"}
            await bulk_write(conn, things, [row(6), short])
    if engine.dialect.name == "postgresql":  # SQLite does not enforce lengths
        with pytest.raises(DBAPIError):
            async with engine.begin() as conn:
                await bulk_write(conn, things, [row(3), row(4, id="x" * 21)])
    assert [r["id"] for r in await read(engine)] == ["t-0"]
