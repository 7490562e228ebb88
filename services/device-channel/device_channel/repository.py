"""Device registry and policy read model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from pydantic_core import from_json, to_json
from sqlalchemy import Table, bindparam, delete, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from device_channel.models import devices, policies, push_queue
from device_channel.state import DeviceChannelState, ParsedPolicies
from device_channel.sync_cache import DEVICE, POLICY, DeviceSnapshot, Key
from managed_os.cloudevents import CloudEvent
from managed_os.db import hold_sqlite_writes, records
from managed_os.policy import Candidate, DeviceFacts, Policy
from managed_os.uow import SqlUnitOfWork

# Every replica LISTENs here; a commit that changed what a sync reads sends `<kind>:<id>`.
CHANNEL = "mos_device_channel"


class Device(BaseModel):
    enrollment_id: str
    blueprint_id: str | None = None
    serial_number: str | None = None
    model: str | None = None
    time_zone: str | None = None
    facts: DeviceFacts
    status: dict[str, Any]
    declarations_token: str
    manifest_changed_at: datetime
    last_report_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


def sync_fields(device: Device) -> tuple[object, ...]:
    """What a sync reads of a device (`sync_cache.DeviceSnapshot`)."""
    return (device.blueprint_id, device.facts, device.manifest_changed_at)


def _values(device: Device) -> dict[str, Any]:
    data = device.model_dump(mode="json")
    data.update(
        last_report_at=device.last_report_at,
        manifest_changed_at=device.manifest_changed_at,
        created_at=device.created_at,
        updated_at=device.updated_at,
    )
    return data


class DeviceRepository:
    """Records in `changed` every device whose sync fields a write changes, for the cache."""

    def __init__(self, conn: AsyncConnection, changed: set[Key]) -> None:
        self.conn, self.changed = conn, changed
        self._locked: dict[str, tuple[object, ...]] = {}

    async def get(self, enrollment_id: str, *, for_update: bool = False) -> Device | None:
        """`for_update` holds the row until commit (PostgreSQL): every writer of a device —
        a status report, a policy refresh, an admin change — takes it before reading the
        policy, so no two of them compute its manifest from each other's stale halves."""
        query = select(devices).where(devices.c.enrollment_id == enrollment_id)
        if for_update:
            await hold_sqlite_writes(self.conn)
            query = query.with_for_update()
        row = (await self.conn.execute(query)).first()
        device = Device.model_validate(dict(row._mapping)) if row else None
        if device is not None and for_update:
            self._locked[enrollment_id] = sync_fields(device)
        return device

    async def get_many(self, ids: Sequence[str], *, for_update: bool = False) -> dict[str, Device]:
        """`get` for several devices; locked in id order, like `on_blueprint`."""
        query = select(devices).where(devices.c.enrollment_id.in_(ids))
        if for_update:
            await hold_sqlite_writes(self.conn)
            query = query.order_by(devices.c.enrollment_id).with_for_update()
        found = {
            d.enrollment_id: d
            for d in (Device.model_validate(r) for r in records(await self.conn.execute(query)))
        }
        if for_update:
            self._locked.update((eid, sync_fields(d)) for eid, d in found.items())
        return found

    async def snapshot(self, enrollment_id: str) -> DeviceSnapshot | None:
        """Only what a sync reads (no lock, no status document)."""
        d = devices.c
        row = (
            await self.conn.execute(
                select(d.blueprint_id, d.facts, d.manifest_changed_at).where(
                    d.enrollment_id == enrollment_id
                )
            )
        ).first()
        if row is None:
            return None
        facts = DeviceFacts.model_validate(row.facts)
        return DeviceSnapshot(row.blueprint_id, facts, row.manifest_changed_at)

    async def list_all(self, limit: int, offset: int) -> list[Device]:
        rows = await self.conn.execute(
            select(devices).order_by(devices.c.enrollment_id).limit(limit).offset(offset)
        )
        return [Device.model_validate(r) for r in records(rows)]

    async def on_blueprint(self, blueprint_id: str) -> list[Device]:
        """The blueprint's devices, held for update (see `get`), in id order."""
        await hold_sqlite_writes(self.conn)
        rows = await self.conn.execute(
            select(devices)
            .where(devices.c.blueprint_id == blueprint_id)
            .order_by(devices.c.enrollment_id)
            .with_for_update()
        )
        found = [Device.model_validate(r) for r in records(rows)]
        self._locked.update((d.enrollment_id, sync_fields(d)) for d in found)
        return found

    async def add(self, device: Device) -> bool:
        """Insert the device unless a concurrent first contact already did (True if this
        call inserted it)."""
        dialect_insert = pg_insert if self.conn.dialect.name == "postgresql" else sqlite_insert
        stmt = dialect_insert(devices).values(**_values(device)).on_conflict_do_nothing()
        inserted = bool((await self.conn.execute(stmt)).rowcount)
        if inserted:
            self.changed.add((DEVICE, device.enrollment_id))
        return inserted

    async def delete(self, enrollment_id: str) -> None:
        await self.conn.execute(delete(devices).where(devices.c.enrollment_id == enrollment_id))
        self.changed.add((DEVICE, enrollment_id))

    async def save(self, device: Device) -> None:
        """A save that leaves the sync fields of a row this transaction locked as they were
        (most status reports) invalidates nothing; any other save does."""
        await self.conn.execute(
            update(devices)
            .where(devices.c.enrollment_id == device.enrollment_id)
            .values(**_values(device))
        )
        if self._locked.get(device.enrollment_id) != sync_fields(device):
            self.changed.add((DEVICE, device.enrollment_id))

    async def save_many(self, batch: Sequence[Device]) -> None:
        """`save` for several devices, in one round trip."""
        if not batch:
            return
        rows = []
        for device in batch:
            values = _values(device)
            values["b_enrollment_id"] = values.pop("enrollment_id")
            rows.append(values)
            if self._locked.get(device.enrollment_id) != sync_fields(device):
                self.changed.add((DEVICE, device.enrollment_id))
        await self.conn.execute(
            update(devices).where(devices.c.enrollment_id == bindparam("b_enrollment_id")), rows
        )

    def transaction_ended(self) -> None:
        """Row locks are gone with the transaction: forget what they guarded."""
        self._locked.clear()


@dataclass
class StatusPlan:
    """What a batch of status reports does to the devices they came from
    (`service.plan_statuses`)."""

    devices: dict[str, Device]  # every device of the batch, after its reports
    events: list[tuple[str, CloudEvent]]  # (topic, event), in the order of the reports
    pushes: dict[str, str]  # enrollment id -> the new declarations token to push


@dataclass(frozen=True, slots=True)
class VersionedDevice:
    """A device as read by `StatusBatchStore`: its row version and its policy's token, read in
    the same snapshot."""

    device: Device
    version: str  # the row's xmin: any write of the row changes it
    policy_token: str | None


class StatusBatchStore:
    """PostgreSQL only: a batch of status reports in two statements and no explicit transaction
    (each statement is its own), where the locked path takes five round trips and a BEGIN and
    a COMMIT. `read` takes the devices and their policies' tokens from one snapshot; `write`
    stores the planned rows, only where the row is still the version read, together with
    their events, pushes and cache notifications, atomically (one statement)."""

    _READ = """
        SELECT d.enrollment_id, d.blueprint_id, d.serial_number, d.model, d.time_zone,
               d.facts::text AS facts, d.status::text AS status, d.declarations_token,
               d.manifest_changed_at, d.last_report_at, d.created_at, d.updated_at,
               d.xmin::text AS version, p.token AS policy_token
        FROM devices d LEFT JOIN policies p ON p.blueprint_id = d.blueprint_id
        WHERE d.enrollment_id = ANY($1::text[])
    """
    _WRITE = f"""
        WITH input AS (
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                 $6::timestamptz[], $7::bool[])
                AS i(enrollment_id, version, status, facts, token, manifest_changed_at, notify)
        ), written AS (
            UPDATE devices d
            SET status = i.status::jsonb, facts = i.facts::jsonb, declarations_token = i.token,
                manifest_changed_at = i.manifest_changed_at, last_report_at = $8,
                updated_at = $8
            FROM input i
            WHERE d.enrollment_id = i.enrollment_id AND d.xmin::text = i.version
            RETURNING d.enrollment_id, i.notify
        ), events AS (
            INSERT INTO outbox (topic, key, event_id, event_type, envelope, created_at)
            SELECT e.topic, e.key, e.event_id, e.event_type, e.envelope::json, $9
            FROM unnest($10::text[], $11::text[], $12::text[], $13::text[], $14::text[])
                WITH ORDINALITY AS e(topic, key, event_id, event_type, envelope, n)
            WHERE e.key IN (SELECT enrollment_id FROM written)
            ORDER BY e.n
        ), pushes AS (
            INSERT INTO push_queue
                (enrollment_id, declarations_token, queued_at, attempts, next_attempt_at)
            SELECT q.enrollment_id, q.token, $8, 0, $8
            FROM unnest($15::text[], $16::text[]) AS q(enrollment_id, token)
            WHERE q.enrollment_id IN (SELECT enrollment_id FROM written)
            ON CONFLICT (enrollment_id) DO UPDATE SET
                declarations_token = excluded.declarations_token, queued_at = excluded.queued_at,
                attempts = 0, next_attempt_at = excluded.next_attempt_at, last_error = NULL
        ), notified AS (
            SELECT count(pg_notify('{CHANNEL}', '{DEVICE}:' || enrollment_id)) AS n
            FROM written WHERE notify
        )
        SELECT w.enrollment_id FROM written w CROSS JOIN notified
    """

    def __init__(self, driver: Any) -> None:
        self.driver = driver  # the asyncpg connection under a pooled SQLAlchemy connection

    @classmethod
    async def of(cls, conn: AsyncConnection) -> StatusBatchStore:
        return cls((await conn.get_raw_connection()).driver_connection)

    async def read(self, ids: Sequence[str]) -> dict[str, VersionedDevice]:
        found: dict[str, VersionedDevice] = {}
        for row in await self.driver.fetch(self._READ, list(ids)):
            values = dict(row)
            version, token = values.pop("version"), values.pop("policy_token")
            # JSON decoded here, not by the driver's codec; pydantic's validation of the
            # decoded row measured faster than building it unvalidated.
            values["facts"] = from_json(values["facts"])
            values["status"] = from_json(values["status"])
            found[row["enrollment_id"]] = VersionedDevice(
                Device.model_validate(values), version, token
            )
        return found

    async def write(
        self, plan: StatusPlan, read: dict[str, VersionedDevice], now: datetime
    ) -> set[str]:
        """Store the plan's devices still at the version `read` had (with their events and
        pushes); returns their ids."""
        ids = sorted(plan.devices)
        devices = [plan.devices[eid] for eid in ids]
        events = [event for _, event in plan.events]
        rows = await self.driver.fetch(
            self._WRITE,
            ids,
            [read[eid].version for eid in ids],
            [_json(d.status) for d in devices],
            [_json(d.facts.model_dump(mode="json")) for d in devices],
            [d.declarations_token for d in devices],
            [d.manifest_changed_at for d in devices],
            [sync_fields(d) != sync_fields(read[d.enrollment_id].device) for d in devices],
            now,
            datetime.now(UTC),
            [topic for topic, _ in plan.events],
            [event.subject for event in events],
            [event.id for event in events],
            [event.type for event in events],
            [_json(event.to_structured()) for event in events],
            list(plan.pushes),
            list(plan.pushes.values()),
        )
        return {row["enrollment_id"] for row in rows}


def _json(value: Any) -> str:
    return to_json(value).decode()


class PolicyStore:
    def __init__(self, conn: AsyncConnection, parsed: ParsedPolicies, changed: set[Key]) -> None:
        self.conn, self.parsed, self.changed = conn, parsed, changed

    async def get(self, blueprint_id: str | None) -> Policy | None:
        """The stored policy, read from the database (a writer must see the latest); parsed
        once per (blueprint, token), so only the small revision row is read when unchanged."""
        if blueprint_id is None:
            return None
        p = policies.c
        head = (
            await self.conn.execute(select(p.token).where(p.blueprint_id == blueprint_id))
        ).first()
        if head is None:
            return None
        cached = self.parsed.get(blueprint_id, head.token)
        if cached is not None:
            return cached
        row = (
            await self.conn.execute(select(policies).where(p.blueprint_id == blueprint_id))
        ).first()
        if row is None:
            return None
        policy = Policy(
            blueprint_id=row.blueprint_id,
            revision=row.revision,
            token=row.token,
            candidates=[Candidate.model_validate(c) for c in row.candidates],
        )
        self.parsed.put(policy)
        return policy

    async def put(self, policy: Policy, now: datetime) -> bool:
        """Store `policy` unless a newer or equal revision is stored; True if stored."""
        current = await self.conn.scalar(
            select(policies.c.revision).where(policies.c.blueprint_id == policy.blueprint_id)
        )
        values = {
            "revision": policy.revision,
            "token": policy.token,
            "candidates": [c.model_dump(mode="json") for c in policy.candidates],
            "updated_at": now,
        }
        if current is None:
            await self.conn.execute(
                insert(policies).values(blueprint_id=policy.blueprint_id, **values)
            )
        elif current >= policy.revision:
            return False
        else:
            await self.conn.execute(
                update(policies)
                .where(policies.c.blueprint_id == policy.blueprint_id)
                .values(**values)
            )
        self.changed.add((POLICY, policy.blueprint_id))
        return True


class PendingPush(BaseModel):
    enrollment_id: str
    declarations_token: str
    attempts: int = 0


class PushQueue:
    """Contract: `queue` in the caller's transaction (the manifest change and its push commit
    together); `lease` hands out due rows and pushes their retry time past the lease, so a
    sender that dies leaves them to be retried; `sent` removes a row only if no newer token
    was queued meanwhile."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def queue(self, enrollment_id: str, token: str, now: datetime) -> None:
        await self.conn.execute(
            delete(push_queue).where(push_queue.c.enrollment_id == enrollment_id)
        )
        await self.conn.execute(
            insert(push_queue).values(
                enrollment_id=enrollment_id,
                declarations_token=token,
                queued_at=now,
                attempts=0,
                next_attempt_at=now,
            )
        )

    async def cancel(self, enrollment_id: str) -> None:
        await self.conn.execute(
            delete(push_queue).where(push_queue.c.enrollment_id == enrollment_id)
        )

    async def lease(self, now: datetime, limit: int, lease: timedelta) -> list[PendingPush]:
        q = push_queue.c
        query = (
            select(q.enrollment_id, q.declarations_token, q.attempts)
            .where(q.next_attempt_at <= now)
            .order_by(q.next_attempt_at)
            .limit(limit)
        )
        if self.conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = (await self.conn.execute(query)).all()
        if rows:
            await self.conn.execute(
                update(push_queue)
                .where(q.enrollment_id.in_([r.enrollment_id for r in rows]))
                .values(next_attempt_at=now + lease)
            )
        return [PendingPush.model_validate(dict(r._mapping)) for r in rows]

    async def sent(self, pushes: list[PendingPush]) -> None:
        q = push_queue.c
        for push in pushes:
            await self.conn.execute(
                delete(push_queue).where(
                    q.enrollment_id == push.enrollment_id,
                    q.declarations_token == push.declarations_token,
                )
            )

    async def failed(
        self,
        pushes: list[PendingPush],
        now: datetime,
        error: str,
        backoff: Callable[[int], timedelta],
    ) -> None:
        q = push_queue.c
        for push in pushes:
            await self.conn.execute(
                update(push_queue)
                .where(
                    q.enrollment_id == push.enrollment_id,
                    q.declarations_token == push.declarations_token,
                )
                .values(
                    attempts=push.attempts + 1,
                    next_attempt_at=now + backoff(push.attempts + 1),
                    last_error=error[:500],
                )
            )

    async def pending(self) -> int:
        return int(await self.conn.scalar(select(func.count()).select_from(push_queue)) or 0)


class DeviceChannelUnitOfWork(SqlUnitOfWork):
    """Also keeps the sync cache true: a commit that changed a device's sync fields or a policy
    sends `NOTIFY mos_device_channel, '<kind>:<id>'` inside the transaction (PostgreSQL delivers
    it to every replica's LISTEN on commit), then invalidates this process's cache at once."""

    devices: DeviceRepository
    policies: PolicyStore
    pushes: PushQueue

    def __init__(
        self,
        engine: AsyncEngine,
        outbox_table: Table,
        inbox_table: Table,
        on_commit: Callable[[], None] | None = None,
        state: DeviceChannelState | None = None,
    ) -> None:
        super().__init__(engine, outbox_table, inbox_table, on_commit)
        self.state = state if state is not None else DeviceChannelState()
        self.changed: set[Key] = set()

    def _bind(self, conn: AsyncConnection) -> None:
        self.changed.clear()
        self.devices = DeviceRepository(conn, self.changed)
        self.policies = PolicyStore(conn, self.state.policies, self.changed)
        self.pushes = PushQueue(conn)

    async def commit(self) -> None:
        keys = sorted(self.changed)
        self.changed.clear()
        self.devices.transaction_ended()
        if keys and self.conn.dialect.name == "postgresql":
            await self.conn.execute(
                text("SELECT pg_notify(:channel, k) FROM unnest(CAST(:keys AS text[])) AS k"),
                {"channel": CHANNEL, "keys": [f"{kind}:{ident}" for kind, ident in keys]},
            )
        try:
            await super().commit()
        finally:
            # Also when the commit failed: it may have happened; a needless miss is harmless.
            self.state.cache.invalidate(keys)

    async def rollback(self) -> None:
        self.changed.clear()
        if self._conn is not None:
            self.devices.transaction_ended()
        await super().rollback()
