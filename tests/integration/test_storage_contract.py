"""The outbox and inbox contracts, on every storage backend (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

import pytest

from managed_os.bus.inprocess import InProcessBus
from managed_os.cloudevents import CloudEvent
from managed_os.inbox import idempotent
from managed_os.outbox import OutboxRelay
from tests.support.backends import undelivered, uow_factory

BACKENDS = ["memory", "sqlite", "postgres"]


def event(n: int, key: str = "k") -> CloudEvent:
    return CloudEvent(type="test.happened.v1", source="/test", subject=key, data={"n": n})


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pg_or_none(backend: str, request: pytest.FixtureRequest):
    return request.getfixturevalue("pg") if backend == "postgres" else None


async def test_outbox_rows_become_visible_only_when_their_transaction_commits(
    backend, tmp_path, pg_or_none
):
    async with uow_factory(backend, tmp_path, pg_or_none) as make:
        async with make() as uow:
            await uow.outbox.add("t", event(1))
            async with make() as other:
                assert await other.outbox.pending(10) == []
            await uow.commit()
        async with make() as uow:
            pending = await uow.outbox.pending(10)
        assert [r.event.data for r in pending] == [{"n": 1}]


async def test_a_rolled_back_transaction_leaves_no_outbox_row_and_no_state(
    backend, tmp_path, pg_or_none
):
    async with uow_factory(backend, tmp_path, pg_or_none) as make:
        async with make() as uow:
            await uow.outbox.add("t", event(1))
            await uow.effects.add("should vanish")
        async with make() as uow:
            assert await uow.outbox.pending(10) == []
            assert await undelivered(uow.outbox) == 0
            assert await uow.effects.all() == []


async def test_pending_returns_oldest_first_up_to_the_limit_and_remove_deletes(
    backend, tmp_path, pg_or_none
):
    async with uow_factory(backend, tmp_path, pg_or_none) as make:
        async with make() as uow:
            for n in range(5):
                await uow.outbox.add("t", event(n))
            await uow.commit()
        async with make() as uow:
            first = await uow.outbox.pending(3)
            assert [r.event.data["n"] for r in first] == [0, 1, 2]
            await uow.outbox.remove([r.id for r in first] + [999_999])
            await uow.commit()
        async with make() as uow:
            rest = await uow.outbox.pending(10)
            assert [r.event.data["n"] for r in rest] == [3, 4]
            assert await undelivered(uow.outbox) == 2


async def test_an_event_round_trips_through_the_outbox_unchanged(backend, tmp_path, pg_or_none):
    original = event(7, key="device-1")
    async with uow_factory(backend, tmp_path, pg_or_none) as make:
        async with make() as uow:
            await uow.outbox.add("devices", original)
            await uow.commit()
        async with make() as uow:
            (record,) = await uow.outbox.pending(1)
    assert record.topic == "devices"
    assert record.event == original


async def test_the_inbox_records_an_event_once_per_consumer(backend, tmp_path, pg_or_none):
    async with uow_factory(backend, tmp_path, pg_or_none) as make:
        async with make() as uow:
            assert await uow.inbox.record("c1", "e1") is True
            assert await uow.inbox.record("c1", "e1") is False
            assert await uow.inbox.record("c2", "e1") is True
            await uow.commit()
        async with make() as uow:
            assert await uow.inbox.record("c1", "e1") is False


async def test_the_inbox_records_a_batch_and_reports_only_new_ids(backend, tmp_path, pg_or_none):
    async with uow_factory(backend, tmp_path, pg_or_none) as make:
        async with make() as uow:
            assert await uow.inbox.record("c1", "e1") is True
            fresh = await uow.inbox.record_many("c1", ["e1", "e2", "e3", "e2"])
            assert fresh == {"e2", "e3"}
            assert await uow.inbox.record_many("c2", ["e1"]) == {"e1"}
            await uow.commit()
        async with make() as uow:
            many = [f"m{i}" for i in range(6001)]  # more than one multi-row INSERT
            assert await uow.inbox.record_many("c1", ["e3", *many]) == set(many)
            assert await uow.inbox.record_many("c1", []) == set()
        async with make() as uow:  # the second batch rolled back: its ids are new again
            assert await uow.inbox.record_many("c1", ["m0", "e3"]) == {"m0"}


async def test_a_rolled_back_inbox_record_leaves_no_trace(backend, tmp_path, pg_or_none):
    async with uow_factory(backend, tmp_path, pg_or_none) as make:
        async with make() as uow:
            assert await uow.inbox.record("c1", "e9") is True
        async with make() as uow:
            assert await uow.inbox.record("c1", "e9") is True


async def test_a_consumer_that_sees_the_same_event_twice_applies_it_once(
    backend, tmp_path, pg_or_none
):
    async def apply(uow, ev: CloudEvent) -> None:
        await uow.effects.add(f"applied {ev.data['n']}")

    async with uow_factory(backend, tmp_path, pg_or_none) as make:
        handle = idempotent("counter", make, apply)
        duplicate = event(1)
        await handle(duplicate)
        await handle(duplicate)
        await handle(event(2))
        async with make() as uow:
            assert await uow.effects.all() == ["applied 1", "applied 2"]


async def test_a_failing_handler_rolls_back_and_the_retry_applies_the_event(
    backend, tmp_path, pg_or_none
):
    calls = {"n": 0}

    async def flaky(uow, ev: CloudEvent) -> None:
        await uow.effects.add("applied")
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")

    async with uow_factory(backend, tmp_path, pg_or_none) as make:
        handle = idempotent("flaky", make, flaky)
        ev = event(1)
        with pytest.raises(RuntimeError):
            await handle(ev)
        await handle(ev)
        await handle(ev)
        async with make() as uow:
            assert await uow.effects.all() == ["applied"]


async def test_the_relay_publishes_in_order_and_empties_the_outbox(backend, tmp_path, pg_or_none):
    bus = InProcessBus()
    await bus.start()
    async with uow_factory(backend, tmp_path, pg_or_none) as make:
        async with make() as uow:
            for n in range(250):
                await uow.outbox.add("t", event(n))
            await uow.commit()
        relay = OutboxRelay(make, bus, batch=100)
        assert await relay.run_once() == 100
        await relay.flush()
        async with make() as uow:
            assert await undelivered(uow.outbox) == 0
    assert [e.data["n"] for e in bus._log["t"]] == list(range(250))


async def test_json_read_back_from_postgresql_is_exact(pg):
    """The engine's JSON reader (pydantic-core) keeps integers of any size, as PostgreSQL does."""
    from sqlalchemy import text

    from managed_os.db import make_engine

    engine = make_engine(pg.create())
    try:
        async with engine.connect() as conn:
            value = (
                await conn.execute(
                    text("SELECT CAST(:doc AS jsonb)"),
                    {"doc": '{"big": 123456789012345678901234567890, "x": [1.5, "é", null]}'},
                )
            ).scalar()
        assert value == {"big": 123456789012345678901234567890, "x": [1.5, "é", None]}
    finally:
        await engine.dispose()


async def test_the_span_counts_the_ids_from_the_oldest_to_the_newest(backend, tmp_path, pg_or_none):
    async with uow_factory(backend, tmp_path, pg_or_none) as make:
        async with make() as uow:
            assert await uow.outbox.span(1) == 0  # empty
            for n in range(5):
                await uow.outbox.add("t", event(n))
            await uow.commit()
        async with make() as uow:
            records = await uow.outbox.pending(10)
            ids = [r.id for r in records]
            assert await uow.outbox.span(ids[0]) == 5
            assert await uow.outbox.span(ids[2]) == 3
            await uow.outbox.remove(ids[:2])
            await uow.commit()
        async with make() as uow:
            assert await uow.outbox.span(ids[2]) == 3 == await undelivered(uow.outbox)
            assert await uow.outbox.span(ids[-1] + 1) == 0


async def test_a_relay_draining_full_batches_reports_the_backlog_left(
    backend, tmp_path, pg_or_none
):
    async with uow_factory(backend, tmp_path, pg_or_none) as make:
        bus = InProcessBus()
        await bus.start()
        for rows, wanted in ((25, [15, 5, 0]), (20, [10, 0, 0])):
            async with make() as uow:
                for n in range(rows):
                    await uow.outbox.add("t", event(n))
                await uow.commit()
            seen: list[int] = []
            relay = OutboxRelay(make, bus, batch=10, on_backlog=seen.append)
            for _ in range(3):
                await relay.run_once()
            assert seen == wanted  # the last full batch emptying the table leaves 0
