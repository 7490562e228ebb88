"""Compliance REST API."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter

from compliance.rules import State
from compliance.service import judged, summarise
from compliance.settings import ComplianceSettings
from managed_os.app import Ctx, scope
from managed_os.errors import NotFound

router = APIRouter(prefix="/v1", tags=["compliance"])
READ = scope("compliance:read")


def _stale(ctx: Ctx) -> timedelta:
    settings: ComplianceSettings = ctx.settings  # type: ignore[assignment]
    return timedelta(hours=settings.stale_after_hours)


@router.get("/devices", dependencies=[READ])
async def list_devices(
    ctx: Ctx, state: State | None = None, blueprint_id: str | None = None
) -> dict[str, Any]:
    now = ctx.clock.now()
    async with ctx.uow() as uow:
        records = await uow.devices.all(blueprint_id)
    rows = [judged(r, now, _stale(ctx)) for r in records]
    return {"items": [r for r in rows if state is None or r["state"] == state]}


@router.get("/devices/{enrollment_id}", dependencies=[READ])
async def get_device(ctx: Ctx, enrollment_id: str) -> dict[str, Any]:
    async with ctx.uow() as uow:
        record = await uow.devices.get(enrollment_id)
    if record is None:
        raise NotFound(f"no compliance record for device {enrollment_id}")
    return judged(record, ctx.clock.now(), _stale(ctx))


@router.get("/summary", dependencies=[READ])
async def summary(ctx: Ctx, blueprint_id: str | None = None) -> dict[str, Any]:
    now = ctx.clock.now()
    async with ctx.uow() as uow:
        records = await uow.devices.all(blueprint_id)
    return summarise([judged(r, now, _stale(ctx)) for r in records])
