"""Device registry and policy read model."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from device_channel.models import devices, policies, push_queue
from managed_os.policy import Candidate, DeviceFacts, Policy
from managed_os.uow import SqlUnitOfWork


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
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def get(self, enrollment_id: str, *, for_update: bool = False) -> Device | None:
        """`for_update` holds the row until commit (PostgreSQL): every writer of a device —
        a status report, a policy refresh, an admin change — takes it before reading the
        policy, so no two of them compute its manifest from each other's stale halves."""
        query = select(devices).where(devices.c.enrollment_id == enrollment_id)
        if for_update:
            query = query.with_for_update()
        row = (await self.conn.execute(query)).first()
        return Device.model_validate(dict(row._mapping)) if row else None

    async def list_all(self, limit: int, offset: int) -> list[Device]:
        rows = await self.conn.execute(
            select(devices).order_by(devices.c.enrollment_id).limit(limit).offset(offset)
        )
        return [Device.model_validate(dict(r._mapping)) for r in rows]

    async def on_blueprint(self, blueprint_id: str) -> list[Device]:
        """The blueprint's devices, held for update (see `get`), in id order."""
        rows = await self.conn.execute(
            select(devices)
            .where(devices.c.blueprint_id == blueprint_id)
            .order_by(devices.c.enrollment_id)
            .with_for_update()
        )
        return [Device.model_validate(dict(r._mapping)) for r in rows]

    async def add(self, device: Device) -> None:
        await self.conn.execute(insert(devices).values(**_values(device)))

    async def delete(self, enrollment_id: str) -> None:
        await self.conn.execute(delete(devices).where(devices.c.enrollment_id == enrollment_id))

    async def save(self, device: Device) -> None:
        await self.conn.execute(
            update(devices)
            .where(devices.c.enrollment_id == device.enrollment_id)
            .values(**_values(device))
        )


_parsed: dict[tuple[str, str], Policy] = {}


class PolicyStore:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def get(self, blueprint_id: str | None) -> Policy | None:
        """The stored policy; parsed once per (blueprint, token) and kept in memory, so a
        sync reads only the small revision row when the policy has not changed. (The token is
        the declarations service's hash of the candidates: same token, same content.)"""
        if blueprint_id is None:
            return None
        p = policies.c
        head = (
            await self.conn.execute(select(p.token).where(p.blueprint_id == blueprint_id))
        ).first()
        if head is None:
            return None
        cached = _parsed.get((blueprint_id, head.token))
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
        if len(_parsed) >= 1024:
            _parsed.pop(next(iter(_parsed)))
        _parsed[(row.blueprint_id, row.token)] = policy
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
            return True
        if current >= policy.revision:
            return False
        await self.conn.execute(
            update(policies).where(policies.c.blueprint_id == policy.blueprint_id).values(**values)
        )
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
    devices: DeviceRepository
    policies: PolicyStore
    pushes: PushQueue

    def _bind(self, conn: AsyncConnection) -> None:
        self.devices = DeviceRepository(conn)
        self.policies = PolicyStore(conn)
        self.pushes = PushQueue(conn)
