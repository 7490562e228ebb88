"""Admin API: the device registry."""

from __future__ import annotations

from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field, field_validator

from device_channel import service
from device_channel.repository import Device
from managed_os.app import Ctx, scope

router = APIRouter(prefix="/v1", tags=["devices"])
READ = scope("device-channel:read")
WRITE = scope("device-channel:write")


class DeviceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enrollment_id: str = Field(min_length=1, max_length=200)
    blueprint_id: str | None = Field(None, max_length=36)
    serial_number: str | None = Field(None, max_length=64)
    model: str | None = Field(None, max_length=64)
    time_zone: str | None = Field(
        None,
        max_length=64,
        description="IANA time zone of the Mac (e.g. Europe/Paris); compliance then judges "
        "deadlines in it instead of the last zone to reach them (UTC-12)",
    )

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {value!r}") from exc
        return value


class BlueprintAssignment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    blueprint_id: str | None = Field(max_length=36)


class DeviceOut(BaseModel):
    device: Device
    manifest: list[dict[str, str]]


@router.post("/devices", dependencies=[WRITE], status_code=status.HTTP_201_CREATED)
async def register_device(ctx: Ctx, body: DeviceIn) -> Device:
    async with ctx.uow() as uow:
        changes = body.model_dump(include=body.model_fields_set - {"enrollment_id"})
        device = await service.register(uow, body.enrollment_id, changes, ctx.clock.now())
        await uow.commit()
    return device


@router.get("/devices", dependencies=[READ])
async def list_devices(
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, list[Device]]:
    async with ctx.uow() as uow:
        return {"items": await uow.devices.list_all(limit, offset)}


@router.get("/devices/{enrollment_id}", dependencies=[READ])
async def get_device(ctx: Ctx, enrollment_id: str) -> DeviceOut:
    async with ctx.uow() as uow:
        device = await service.get_device(uow, enrollment_id)
        manifest = await service.manifest_for(uow, device)
    items = [
        {"category": d.category.value, "identifier": d.identifier, "server_token": d.server_token}
        for d in manifest.declarations
    ]
    return DeviceOut(device=device, manifest=items)


@router.put("/devices/{enrollment_id}/blueprint", dependencies=[WRITE])
async def assign_blueprint(ctx: Ctx, enrollment_id: str, body: BlueprintAssignment) -> Device:
    """Move the Mac to another blueprint (`null`: none); its manifest follows at once."""
    async with ctx.uow() as uow:
        await service.get_device(uow, enrollment_id)
        device = await service.register(
            uow, enrollment_id, {"blueprint_id": body.blueprint_id}, ctx.clock.now()
        )
        await uow.commit()
    return device


@router.delete("/devices/{enrollment_id}", dependencies=[WRITE], status_code=204)
async def unenroll_device(ctx: Ctx, enrollment_id: str) -> Response:
    """Unenroll: the record, its facts and its manifest are gone."""
    async with ctx.uow() as uow:
        await service.unenroll(uow, enrollment_id, ctx.clock.now())
        await uow.commit()
    return Response(status_code=204)
