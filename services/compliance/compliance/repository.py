"""Per-device compliance inputs (the latest report and expectation)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from compliance.models import device_states
from compliance.rules import DeviceRecord
from managed_os.uow import SqlUnitOfWork


class DeviceStateRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def get(self, enrollment_id: str) -> DeviceRecord | None:
        row = (
            await self.conn.execute(
                select(device_states).where(device_states.c.enrollment_id == enrollment_id)
            )
        ).first()
        return DeviceRecord.model_validate(dict(row._mapping)) if row else None

    async def all(self, blueprint_id: str | None = None) -> list[DeviceRecord]:
        query = select(device_states).order_by(device_states.c.enrollment_id)
        if blueprint_id is not None:
            query = query.where(device_states.c.blueprint_id == blueprint_id)
        return [
            DeviceRecord.model_validate(dict(r._mapping)) for r in await self.conn.execute(query)
        ]

    async def put(self, record: DeviceRecord, now: datetime) -> None:
        data: dict[str, Any] = record.model_dump(mode="json")
        data.update(last_report_at=record.last_report_at, updated_at=now)
        await self.conn.execute(
            delete(device_states).where(device_states.c.enrollment_id == record.enrollment_id)
        )
        await self.conn.execute(insert(device_states).values(**data))


class ComplianceUnitOfWork(SqlUnitOfWork):
    devices: DeviceStateRepository

    def _bind(self, conn: AsyncConnection) -> None:
        self.devices = DeviceStateRepository(conn)
