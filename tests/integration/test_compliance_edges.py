"""Edge cases of the batched compliance consumer, the sweep and the API, found in review:
a Mac unenrolled and registered again in one batch, several judgements of one Mac in one
batch, an input the rules cannot judge, NUL characters on PostgreSQL, per-key order after a
partly failed publish, and the running counts against a recount. Each runs on SQLite and
PostgreSQL (the `engine` fixture) unless it is about one of them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from compliance import models
from compliance.repository import ComplianceStore, ComplianceUnitOfWork
from compliance.rules import due_at
from compliance.service import apply_events, sweep
from managed_os.bus.kafka import KafkaBus
from managed_os.cloudevents import CloudEvent
from managed_os.db import make_engine
from managed_os.events import (
    DeviceManifestChanged,
    DeviceRegistered,
    DeviceStatusReported,
    DeviceUnenrolled,
    EventPayload,
    PolicyPublished,
    SoftwareUpdateState,
    to_event,
)
from managed_os.policy import DeviceFacts, ExpectedEnforcement, PolicyItem
from tests.support.apps import bearer, service_client

NOW = datetime(2026, 8, 31, 12, 0, tzinfo=UTC)
STALE = timedelta(hours=72)
GROUP = "compliance.events"


def item(item_id: str, major: int = 26) -> PolicyItem:
    return PolicyItem(
        item_id=item_id, major=major, mode="minimum", installation_method="continuously_enforce"
    )


def enforce(item_id: str, target: str = "26.6.2") -> ExpectedEnforcement:
    return ExpectedEnforcement(
        item_id=item_id,
        declaration_id=f"managed-os.{item_id}.u",
        kind="update",
        target_version=target,
        deadline="2026-09-01T17:00:00",
    )


def policy(bp: str, revision: int, *items: PolicyItem) -> PolicyPublished:
    return PolicyPublished(
        blueprint_id=bp,
        revision=revision,
        token=f"{bp}-{revision}",
        candidates=[],
        items=list(items),
    )


def registered(eid: str, bp: str | None, tz: str | None = None) -> DeviceRegistered:
    return DeviceRegistered(enrollment_id=eid, blueprint_id=bp, time_zone=tz, changed_at=NOW)


def status(
    eid: str,
    bp: str,
    expected: list[ExpectedEnforcement],
    *,
    at: datetime = NOW,
    version: str = "26.4.1",
    install_state: str | None = None,
) -> DeviceStatusReported:
    return DeviceStatusReported(
        enrollment_id=eid,
        blueprint_id=bp,
        reported_at=at,
        full_report=True,
        facts=DeviceFacts(enrollment_id=eid, os_version=version, build_version="25E1"),
        softwareupdate=SoftwareUpdateState(install_state=install_state),
        declarations=[],
        expected=expected,
    )


def ev(payload: EventPayload) -> CloudEvent:
    subject = str(getattr(payload, "enrollment_id", None) or getattr(payload, "blueprint_id", ""))
    return to_event(payload, source="/test", subject=subject, time=NOW)


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Any]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'c.db'}"
    else:
        url = request.getfixturevalue("pg").create()
    eng = make_engine(url)
    async with eng.begin() as conn:
        await conn.run_sync(models.metadata.create_all)
    yield eng
    await eng.dispose()


def uow(engine: Any) -> ComplianceUnitOfWork:
    return ComplianceUnitOfWork(engine, models.outbox, models.processed_events)


async def apply(engine: Any, *payloads: EventPayload | CloudEvent, now: datetime = NOW) -> int:
    events = [p if isinstance(p, CloudEvent) else ev(p) for p in payloads]
    async with uow(engine) as u:
        n = await apply_events(u, GROUP, events, now, STALE)
        await u.commit()
    return n


async def running_vs_rebuilt(engine: Any) -> tuple[dict[Any, int], dict[Any, int]]:
    """(the running counts as kept by deltas, the counts recounted from the rows)."""

    async def read(u: ComplianceUnitOfWork) -> dict[Any, int]:
        rows = await u.conn.execute(select(models.counts))
        return {(r.scope, r.key, r.dim, r.value): r.n for r in rows if r.n}

    async with uow(engine) as u:
        running = await read(u)
        await u.store.rebuild_counts()
        rebuilt = await read(u)  # rolled back on exit
    return running, rebuilt


async def item_rows(engine: Any, eid: str) -> dict[str, dict[str, Any]]:
    async with uow(engine) as u:
        rows = await u.conn.execute(
            select(models.device_items).where(models.device_items.c.enrollment_id == eid)
        )
        return {r.item_id: dict(r._mapping) for r in rows}


async def history(engine: Any, eid: str, item_id: str) -> list[dict[str, Any]]:
    async with uow(engine) as u:
        rows = await u.conn.execute(
            select(models.state_changes)
            .where(
                models.state_changes.c.enrollment_id == eid,
                models.state_changes.c.item_id == item_id,
            )
            .order_by(models.state_changes.c.id)
        )
        return [dict(r._mapping) for r in rows]


# ---- 1. unenrolled and registered again in one batch ----------------------------------------


async def test_unenrol_then_reregister_in_one_batch_forgets_old_item_rows(engine: Any) -> None:
    """DeviceUnenrolled forgets the Mac. If the same batch registers it again (another
    blueprint), the old blueprint's item rows must not survive, and the running counts must
    equal a recount of the rows."""
    await apply(engine, policy("bp-a", 1, item("item-a")), policy("bp-b", 1, item("item-b")))
    await apply(engine, registered("MAC-1", "bp-a"), status("MAC-1", "bp-a", [enforce("item-a")]))
    assert set(await item_rows(engine, "MAC-1")) == {"item-a"}

    await apply(
        engine,
        DeviceUnenrolled(enrollment_id="MAC-1", unenrolled_at=NOW),
        registered("MAC-1", "bp-b"),
    )
    assert set(await item_rows(engine, "MAC-1")) == {"item-b"}
    running, rebuilt = await running_vs_rebuilt(engine)
    assert running == rebuilt


# ---- 2. a Mac judged several times in one batch: item history -------------------------------


async def test_item_history_follows_every_change_within_a_batch(engine: Any) -> None:
    """Two reports of one Mac in one batch: pending, then downloading. The item's history
    must read None -> pending -> in_progress (previous of the second change is `pending`),
    and its last entry must be the item row's state."""
    await apply(engine, policy("bp-a", 1, item("item-a")))
    await apply(
        engine,
        status("MAC-1", "bp-a", [enforce("item-a")], at=NOW),
        status("MAC-1", "bp-a", [enforce("item-a")], at=NOW, install_state="downloading"),
    )
    changes = [(c["previous"], c["state"]) for c in await history(engine, "MAC-1", "item-a")]
    overall = [(c["previous"], c["state"]) for c in await history(engine, "MAC-1", "")]
    assert overall == [(None, "pending"), ("pending", "in_progress")]
    assert changes == [(None, "pending"), ("pending", "in_progress")]


async def test_item_history_records_a_return_to_the_stored_state(engine: Any) -> None:
    """Stored: pending. One batch: downloading, then back to idle. The item went
    pending -> in_progress -> pending; the history must not end on in_progress."""
    await apply(engine, policy("bp-a", 1, item("item-a")))
    await apply(engine, status("MAC-1", "bp-a", [enforce("item-a")], at=NOW))
    later = NOW + timedelta(minutes=1)
    await apply(
        engine,
        status("MAC-1", "bp-a", [enforce("item-a")], at=later, install_state="downloading"),
        status("MAC-1", "bp-a", [enforce("item-a")], at=later + timedelta(seconds=1)),
    )
    rows = await item_rows(engine, "MAC-1")
    changes = await history(engine, "MAC-1", "item-a")
    assert rows["item-a"]["state"] == "pending"
    assert changes[-1]["state"] == rows["item-a"]["state"]


# ---- 3. one event the rules cannot judge ---------------------------------------------


async def test_one_bad_event_does_not_block_the_batch(engine: Any) -> None:
    """An event naming a time zone this host's tzdata lacks must not fail the whole batch (a
    failing batch is retried forever and stops every partition in it): MAC-1 is judged, the
    other Mac falls back to the UTC-12 rule."""
    await apply(engine, policy("bp-a", 1, item("item-a")))
    await apply(engine, registered("MAC-2", "bp-a"), status("MAC-2", "bp-a", [enforce("item-a")]))
    try:
        await apply(
            engine,
            status("MAC-1", "bp-a", [enforce("item-a")]),
            registered("MAC-2", "bp-a", tz="Mars/Olympus_Mons"),
        )
    except Exception as exc:
        pytest.fail(f"a single bad event failed the whole batch: {exc!r}")
    rows = {eid: await item_rows(engine, eid) for eid in ("MAC-1", "MAC-2")}
    assert rows["MAC-1"]["item-a"]["state"] == "pending"  # judged in the same batch
    # MAC-2 keeps the zone as given, and its deadline is judged as if no zone were known.
    async with uow(engine) as u:
        mac2 = await u.store.device("MAC-2")
    assert mac2 is not None
    inputs, row, _items = mac2
    assert inputs.time_zone == "Mars/Olympus_Mons"
    assert row["due_at"] == due_at(row["deadline"], None)


@pytest.mark.parametrize(
    "bad",
    [
        status("M" * 201, "bp-a", [enforce("item-a")]),
        status("MAC-9", "b" * 37, [enforce("item-a")]),
        status("MAC-9", "bp-a", [enforce("item-a")], version="26." + "1" * 30),
        status("MAC-9", "bp-a", [enforce("item-a", target="26." + "1" * 30)]),
        status("MAC-9", "bp-a", [enforce("i" * 37)]),
        registered("MAC-9", "bp-a", "Europe/" + "x" * 58),
        policy("bp-a", 2, item("i" * 37)),
        policy("b" * 37, 1, item("item-a")),
        policy("bp-a", 2**31, item("item-a")),
        policy("bp-a", 2, item("item-a", major=2**31)),
    ],
    ids=[
        "enrollment",
        "blueprint",
        "os",
        "target",
        "item",
        "zone",
        "policy item",
        "policy",
        "revision",
        "major",
    ],
)
async def test_an_event_naming_a_value_too_long_to_store_is_skipped(
    engine: Any, bad: EventPayload
) -> None:
    """PostgreSQL refuses a value longer than its column: such an event failed its whole
    batch, which was redelivered forever, stopping every partition in it. It is skipped (and
    logged); the rest of the batch is applied."""
    await apply(engine, policy("bp-a", 1, item("item-a")))
    try:
        n = await apply(engine, bad, status("MAC-1", "bp-a", [enforce("item-a")]))
    except Exception as exc:
        pytest.fail(f"an overlong value failed the whole batch: {exc!r}")
    assert n == 1
    assert (await item_rows(engine, "MAC-1"))["item-a"]["state"] == "pending"
    async with uow(engine) as u:
        macs = (await u.conn.execute(select(models.devices.c.enrollment_id))).scalars().all()
        revision = (await u.conn.execute(select(models.blueprints.c.revision))).scalars().all()
    assert macs == ["MAC-1"] and revision == [1]


# ---- 4. hostile query strings on PostgreSQL -------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/v1/devices?cursor=AA==",  # a cursor this API would issue for the id "\x00"
        "/v1/devices?version=%00",
        "/v1/devices?blueprint_id=%00",
        "/v1/summary?blueprint_id=a%00",
        "/v1/summary?blueprint_id=a%00&item_id=b",
        "/v1/devices/MAC%00",
        "/v1/trend?blueprint_id=%00",
        "/v1/export.csv?version=%00",
    ],
)
def test_nul_in_query_is_4xx_on_postgresql(pg: Any, tmp_path: Any, path: str) -> None:
    with service_client(
        "compliance", tmp_path, database_url=pg.create(), sweep_interval_seconds=3600
    ) as c:
        r = c.get(path, headers=bearer("compliance:read"))
        assert r.status_code < 500, (path, r.status_code, r.text[:200])


# ---- 5. publish_many: an unacknowledged event followed by acknowledged ones -----------------


class _FakeProducer:
    """Accepts every send; the broker log records the ones whose batch was acknowledged."""

    def __init__(self, fail: set[str]) -> None:
        self.fail, self.log = fail, []  # type: ignore[var-annotated]

    async def send(self, topic: str, value: bytes, key: bytes, headers: Any) -> Any:
        from aiokafka.errors import KafkaTimeoutError

        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        eid = dict(headers)["ce_id"].decode()
        if eid in self.fail:
            self.fail.discard(eid)  # fails once (a timed-out batch), then works
            fut.set_exception(KafkaTimeoutError())
        else:
            self.log.append(eid)
            fut.set_result(None)
        return fut


async def test_publish_many_retry_keeps_per_key_order() -> None:
    """Three events of one Mac (one key); the second is not acknowledged. The third must not
    have been sent, so the relay's retry delivers 2 then 3 and an idempotent consumer applies
    1, 2, 3 (never the Mac's older event last)."""
    bus = KafkaBus("unused:9092")
    e = [
        CloudEvent(type="t", source="/s", subject="MAC-1", data={"n": n}, id=f"e{n}")
        for n in (1, 2, 3)
    ]
    producer = _FakeProducer(fail={"e2"})
    bus._producer = producer
    accepted = await bus.publish_many([("topic", x) for x in e])
    assert accepted == [0]  # e2 failed, so e3 (same key) was never sent
    rest = [x for i, x in enumerate(e) if i not in accepted]
    assert await bus.publish_many([("topic", x) for x in rest]) == [0, 1]  # the relay's retry
    applied = list(dict.fromkeys(producer.log))  # an idempotent consumer
    assert applied == ["e1", "e2", "e3"]


# ---- 6. inbox record_many on both dialects --------------------------------------------------


async def test_record_many_with_conflicts(engine: Any) -> None:
    async with uow(engine) as u:
        assert await u.inbox.record_many(GROUP, ["a", "b"]) == {"a", "b"}
        await u.commit()
    async with uow(engine) as u:
        fresh = await u.inbox.record_many(GROUP, ["b", "c", "c", "a", "d"])
        assert fresh == {"c", "d"}
        await u.commit()
    async with uow(engine) as u:
        assert await u.inbox.record_many(GROUP, ["a", "b", "c", "d"]) == set()


# ---- 7. counts across a blueprint move, item removal and the sweep (controls) --------------


async def test_counts_match_rows_after_moves_removals_and_sweep(engine: Any) -> None:
    await apply(
        engine,
        policy("bp-a", 1, item("item-a"), item("item-x", 15)),
        policy("bp-b", 1, item("item-b")),
    )
    macs = [f"MAC-{i}" for i in range(6)]
    await apply(
        engine,
        *[registered(m, "bp-a", "Europe/Paris") for m in macs],
        *[status(m, "bp-a", [enforce("item-a")]) for m in macs],
    )
    # blueprint move, a Mac judged three times, an unenrolment, an item removal
    await apply(
        engine,
        DeviceManifestChanged(
            enrollment_id="MAC-0",
            blueprint_id="bp-b",
            declarations_token="t",
            changed_at=NOW,
            facts=DeviceFacts(enrollment_id="MAC-0"),
            expected=[enforce("item-b")],
        ),
        status("MAC-1", "bp-a", [enforce("item-a")], at=NOW + timedelta(seconds=1)),
        status("MAC-1", "bp-a", [], at=NOW + timedelta(seconds=2), version="26.6.2"),
        status("MAC-1", "bp-a", [enforce("item-a")], at=NOW + timedelta(seconds=3)),
        DeviceUnenrolled(enrollment_id="MAC-2", unenrolled_at=NOW),
        policy("bp-a", 2, item("item-a")),
    )
    async with uow(engine) as u:
        await sweep(u, NOW + timedelta(minutes=1), STALE, 100)
        await u.commit()
    async with uow(engine) as u:  # past the deadline, then past the stale window
        await sweep(u, NOW + timedelta(days=2), STALE, 100)
        await u.commit()
    async with uow(engine) as u:
        await sweep(u, NOW + timedelta(days=4), STALE, 100)
        await u.commit()
    running, rebuilt = await running_vs_rebuilt(engine)
    assert running == rebuilt
    assert running[("fleet", "", "state", "unknown")] == 5


async def test_counts_follow_a_version_a_blueprint_or_one_item_changing_alone(
    engine: Any,
) -> None:
    """A Mac whose counted rows did not change is left out of the count deltas; each of the
    things counted changing alone (the version, the blueprint, one item's state, the state
    of a Mac without items) must still move the counts."""
    both = [enforce("item-a"), enforce("item-b")]
    await apply(
        engine,
        policy("bp-a", 1, item("item-a"), item("item-b")),
        policy("bp-a2", 1, item("item-a"), item("item-b")),
    )
    await apply(engine, *[status(f"MAC-{i}", "bp-a", both) for i in range(3)])
    await apply(engine, status("MAC-3", "bp-none", []))  # no policy: no items
    later = NOW + timedelta(seconds=1)
    await apply(
        engine,
        status("MAC-0", "bp-a", both, at=later, version="26.5"),  # still pending
        status("MAC-1", "bp-a2", both, at=later),  # moved, same items and states
        # item-b's target met, item-a still pending: the Mac stays pending
        status("MAC-2", "bp-a", [enforce("item-a"), enforce("item-b", "26.4")], at=later),
    )
    assert (await item_rows(engine, "MAC-2"))["item-b"]["state"] == "up_to_date"
    running, rebuilt = await running_vs_rebuilt(engine)
    assert running == rebuilt
    # item-b now targets macOS 27 (its row's major moves; MAC-2 is still on its target)
    await apply(engine, policy("bp-a", 2, item("item-a"), item("item-b", 27)))
    async with uow(engine) as u:
        await sweep(u, NOW + timedelta(minutes=1), STALE, 100)
        await u.commit()
    mac2 = (await item_rows(engine, "MAC-2"))["item-b"]
    assert (mac2["item_major"], mac2["state"]) == (27, "up_to_date")
    running, rebuilt = await running_vs_rebuilt(engine)
    assert running == rebuilt
    async with uow(engine) as u:  # past the stale window: MAC-3 becomes unknown, no items
        await sweep(u, NOW + timedelta(days=4), STALE, 100)
        await u.commit()
    running, rebuilt = await running_vs_rebuilt(engine)
    assert running == rebuilt
    assert running[("blueprint", "bp-a2", "state", "unknown")] == 1
    assert running[("item", "item-b", "state", "unknown")] == 3


def test_export_csv_failure_is_not_a_silent_200(pg: Any, tmp_path: Any) -> None:
    """An export that cannot run (here a NUL the database would refuse) is an error status,
    never a 200 with an empty body that looks like an empty fleet."""
    with service_client(
        "compliance", tmp_path, database_url=pg.create(), sweep_interval_seconds=3600
    ) as c:
        try:
            r = c.get("/v1/export.csv?version=%00", headers=bearer("compliance:read"))
        except Exception as exc:  # the transport sees the stream break
            pytest.fail(f"export broke mid-stream: {exc!r}")
        assert r.status_code != 200 or r.text.startswith("enrollment_id,"), (
            r.status_code,
            r.text[:100],
        )


async def test_sweep_survives_a_zone_this_host_does_not_know(engine: Any) -> None:
    """A Mac stored with a zone that a later tzdata (or another image) lacks: the sweep must
    still judge the other due Macs (due Macs are read oldest first, so one that raised would
    head every batch and nobody would become overdue or unknown)."""
    from sqlalchemy import update

    await apply(engine, policy("bp-a", 1, item("item-a")))
    await apply(
        engine,
        *[registered(m, "bp-a", "Europe/Paris") for m in ("MAC-1", "MAC-2")],
        *[status(m, "bp-a", [enforce("item-a")]) for m in ("MAC-1", "MAC-2")],
    )
    async with uow(engine) as u:  # MAC-1's zone no longer resolves on this host
        row = (
            await u.conn.execute(
                select(models.device_inputs).where(models.device_inputs.c.enrollment_id == "MAC-1")
            )
        ).one()
        await u.conn.execute(
            update(models.device_inputs)
            .where(models.device_inputs.c.enrollment_id == "MAC-1")
            .values(inputs={**row.inputs, "time_zone": "Mars/Olympus_Mons"})
        )
        await u.commit()
    async with uow(engine) as u:
        try:
            await sweep(u, NOW + timedelta(days=2), STALE, 100)
        except Exception as exc:
            pytest.fail(f"one Mac's zone stops the sweep for every Mac: {exc!r}")


# ---- 8. a report that changes nothing but its time -------------------------------------------


async def test_a_report_that_changes_nothing_but_its_time_leaves_the_stored_inputs(
    engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inputs document is rewritten only when a report changes it, or once the hour
    turns (so its report time, which the previous release reads, is never an hour behind);
    the stale window and every reader of this release follow the judged row's time."""
    written: list[list[str]] = []  # per batch, the Macs whose inputs document was written
    save = ComplianceStore.save

    async def spy(self: ComplianceStore, rows: Any, inputs: Any, *rest: Any) -> None:
        written.append([i["enrollment_id"] for i in inputs])
        await save(self, rows, inputs, *rest)

    monkeypatch.setattr(ComplianceStore, "save", spy)

    async def stored(eid: str) -> tuple[Any, Any]:
        async with uow(engine) as u:
            doc = (
                await u.conn.execute(
                    select(models.device_inputs.c.inputs).where(
                        models.device_inputs.c.enrollment_id == eid
                    )
                )
            ).scalar_one()
            return doc, await u.store.device(eid)

    def report(minutes: int, **changes: Any) -> DeviceStatusReported:
        at = NOW + timedelta(minutes=minutes)  # NOW is 12:00
        return status("MAC-1", "bp-a", [enforce("item-a")], at=at, **changes)

    await apply(engine, policy("bp-a", 1, item("item-a")))
    await apply(engine, report(0))
    first, _ = await stored("MAC-1")
    assert written[-1] == ["MAC-1"]
    assert "full_report" not in first
    assert datetime.fromisoformat(first["last_report_at"]) == NOW  # what older releases read

    # The same inputs 20 minutes on, in a partial report: the document stands.
    await apply(engine, report(20).model_copy(update={"full_report": False}), now=NOW)
    assert written[-1] == []
    doc, (inputs, row, _) = await stored("MAC-1")
    assert doc == first
    later = NOW + timedelta(minutes=20)
    assert row["last_report_at"] == later and inputs.last_report_at == later
    # 72 h 10 min after the first report, 71 h 50 min after the second: not stale.
    async with uow(engine) as u:
        await sweep(u, NOW + STALE + timedelta(minutes=10), STALE, 100)
        await u.commit()
    _, (_, row, _) = await stored("MAC-1")
    assert row["state"] != "unknown" and row["next_check_at"] > NOW + STALE
    # The sweep kept the digest: the next unchanged report within the hour is not written.
    await apply(engine, report(30), now=NOW + STALE + timedelta(minutes=11))
    assert written[-1] == []

    # The hour turns: written once more, with its time.
    await apply(engine, report(61), now=NOW + STALE + timedelta(minutes=12))
    assert written[-1] == ["MAC-1"]
    doc, _ = await stored("MAC-1")
    assert datetime.fromisoformat(doc["last_report_at"]) == NOW + timedelta(minutes=61)

    # A report that changes anything else is written, and so is a new time zone.
    await apply(engine, report(62, install_state="downloading"), now=NOW + STALE)
    assert written[-1] == ["MAC-1"]
    doc, (inputs, _, _) = await stored("MAC-1")
    assert doc["softwareupdate"]["install_state"] == "downloading"
    assert inputs.softwareupdate.install_state == "downloading"
    await apply(engine, registered("MAC-1", "bp-a", "Asia/Tokyo"), now=NOW + STALE)
    assert written[-1] == ["MAC-1"]
    doc, (inputs, row, _) = await stored("MAC-1")
    assert doc["time_zone"] == inputs.time_zone == "Asia/Tokyo"
    moved = NOW + timedelta(minutes=62)
    assert row["last_report_at"] == inputs.last_report_at == moved
    assert datetime.fromisoformat(doc["last_report_at"]) == moved


# ---- the sweep's re-evaluation against a consumer batch, and blueprint revisions ---------------


async def test_reevaluating_two_blueprints_cannot_deadlock_with_a_consumer(pg: Any) -> None:
    """Two flagged blueprints whose Macs interleave in id order (bp-b owns MAC-1, bp-a owns
    MAC-9). A consumer batch holds MAC-1 and then wants MAC-9. Locking blueprint by
    blueprint, the sweep took MAC-9 (bp-a first) and then waited for MAC-1: a deadlock that
    PostgreSQL broke by failing one side. Locked in one id-ordered statement, the sweep
    waits for MAC-1 before it takes MAC-9, and both finish."""
    eng = make_engine(pg.create())
    async with eng.begin() as conn:
        await conn.run_sync(models.metadata.create_all)
    try:
        await apply(eng, policy("bp-a", 1, item("i-a")), policy("bp-b", 1, item("i-b")))
        await apply(
            eng,
            status("MAC-9", "bp-a", [enforce("i-a")]),
            status("MAC-1", "bp-b", [enforce("i-b")]),
        )
        await apply(eng, policy("bp-a", 2, item("i-a", 15)), policy("bp-b", 2, item("i-b", 15)))
        consumer = await eng.connect()
        await consumer.begin()
        lock = "SELECT 1 FROM devices WHERE enrollment_id = '{}' FOR UPDATE"
        await consumer.exec_driver_sql(lock.format("MAC-1"))

        async def claim() -> list[str]:
            async with uow(eng) as u:
                flagged = await u.store.claim_reevaluations(NOW)
                await u.commit()
                return flagged

        sweeping = asyncio.create_task(claim())
        await asyncio.sleep(0.5)  # the sweep is now waiting on MAC-1
        assert not sweeping.done()
        await asyncio.wait_for(consumer.exec_driver_sql(lock.format("MAC-9")), 5)
        await consumer.commit()
        await consumer.close()
        assert await asyncio.wait_for(sweeping, 5) == ["bp-a", "bp-b"]
        async with uow(eng) as u:
            due = await u.store.due(NOW, 10)
            flags = await u.conn.execute(select(models.blueprints.c.reevaluate))
            assert sorted(due) == ["MAC-1", "MAC-9"] and {f for (f,) in flags} == {0}
    finally:
        await eng.dispose()


async def test_an_older_blueprint_revision_never_replaces_a_newer_one(engine: Any) -> None:
    async with uow(engine) as u:
        assert await u.store.put_blueprint("bp-1", 3, [item("i-3")], NOW)
        assert not await u.store.put_blueprint("bp-1", 2, [item("i-2")], NOW)
        assert not await u.store.put_blueprint("bp-1", 3, [item("i-x")], NOW)
        assert await u.store.put_blueprint("bp-1", 4, [item("i-4")], NOW)
        assert [i.item_id for i in (await u.store.items_of(["bp-1"]))["bp-1"]] == ["i-4"]


async def test_concurrent_blueprint_writers_keep_the_newest_revision(pg: Any) -> None:
    """The start-up bootstrap and the consumer may store the same blueprint at once: the
    older revision, arriving second, must not replace the newer one committed first."""
    eng = make_engine(pg.create())
    async with eng.begin() as conn:
        await conn.run_sync(models.metadata.create_all)
    try:
        await apply(eng, policy("bp-1", 1, item("i-1")))
        async with uow(eng) as newer, uow(eng) as older:
            assert await newer.store.put_blueprint("bp-1", 4, [item("i-4")], NOW)
            late = asyncio.create_task(older.store.put_blueprint("bp-1", 3, [item("i-3")], NOW))
            await asyncio.sleep(0.3)  # waiting for the newer writer's row lock
            await newer.commit()
            assert not await asyncio.wait_for(late, 5)
            await older.commit()
        async with uow(eng) as u:
            assert [i.item_id for i in (await u.store.items_of(["bp-1"]))["bp-1"]] == ["i-4"]
    finally:
        await eng.dispose()


async def test_a_report_whose_time_has_no_offset_is_skipped(engine: Any) -> None:
    """Event times are RFC 3339 with an offset. A report time without one compared with the
    stored (aware) time failed its whole batch on every redelivery; it breaks the event
    contract and is skipped (and logged), and the rest of the batch is applied."""
    await apply(engine, policy("bp-a", 1, item("item-a")))
    await apply(engine, status("MAC-1", "bp-a", [enforce("item-a")]))
    naive = ev(status("MAC-1", "bp-a", [enforce("item-a")], install_state="downloading"))
    naive.data["reported_at"] = (NOW + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
    later = status("MAC-2", "bp-a", [enforce("item-a")], at=NOW + timedelta(minutes=1))
    try:
        n = await apply(engine, naive, later)
    except Exception as exc:
        pytest.fail(f"a report time without an offset failed the whole batch: {exc!r}")
    assert n == 1
    assert (await item_rows(engine, "MAC-1"))["item-a"]["state"] == "pending"
    assert (await item_rows(engine, "MAC-2"))["item-a"]["state"] == "pending"
