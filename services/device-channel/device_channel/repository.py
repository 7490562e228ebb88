"""Device registry and policy read model."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from device_channel.models import devices, policies
from managed_os.policy import Candidate, DeviceFacts, Policy
from managed_os.uow import SqlUnitOfWork


class Device(BaseModel):
    enrollment_id: str
    blueprint_id: str | None = None
    serial_number: str | None = None
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

    async def get(self, enrollment_id: str) -> Device | None:
        row = (
            await self.conn.execute(select(devices).where(devices.c.enrollment_id == enrollment_id))
        ).first()
        return Device.model_validate(dict(row._mapping)) if row else None

    async def list_all(self, limit: int, offset: int) -> list[Device]:
        rows = await self.conn.execute(
            select(devices).order_by(devices.c.enrollment_id).limit(limit).offset(offset)
        )
        return [Device.model_validate(dict(r._mapping)) for r in rows]

    async def on_blueprint(self, blueprint_id: str) -> list[Device]:
        rows = await self.conn.execute(
            select(devices).where(devices.c.blueprint_id == blueprint_id)
        )
        return [Device.model_validate(dict(r._mapping)) for r in rows]

    async def add(self, device: Device) -> None:
        await self.conn.execute(insert(devices).values(**_values(device)))

    async def save(self, device: Device) -> None:
        await self.conn.execute(
            update(devices)
            .where(devices.c.enrollment_id == device.enrollment_id)
            .values(**_values(device))
        )


class PolicyStore:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def get(self, blueprint_id: str | None) -> Policy | None:
        if blueprint_id is None:
            return None
        row = (
            await self.conn.execute(select(policies).where(policies.c.blueprint_id == blueprint_id))
        ).first()
        if row is None:
            return None
        return Policy(
            blueprint_id=row.blueprint_id,
            revision=row.revision,
            token=row.token,
            candidates=[Candidate.model_validate(c) for c in row.candidates],
        )

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


class DeviceChannelUnitOfWork(SqlUnitOfWork):
    devices: DeviceRepository
    policies: PolicyStore

    def _bind(self, conn: AsyncConnection) -> None:
        self.devices = DeviceRepository(conn)
        self.policies = PolicyStore(conn)
