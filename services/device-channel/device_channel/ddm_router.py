"""DDM endpoints as NanoMDM's `-dm` hook forwards them, and the raw check-in for servers that
forward check-ins whole. Responses are exactly Apple's shapes, signed when a key is set."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response

from device_channel import hmac, service
from device_channel.repository import DeviceChannelUnitOfWork
from device_channel.settings import DeviceChannelSettings
from managed_os import ddm
from managed_os.app import Ctx
from managed_os.errors import MalformedRequest, NotFound, Unauthorized

router = APIRouter(tags=["ddm"])
EnrollmentId = Annotated[str, Header(alias="X-Enrollment-ID", min_length=1, max_length=200)]
EnrollmentType = Annotated[str | None, Header(alias="X-Enrollment-Type")]


async def _verified_body(ctx: Ctx, request: Request) -> bytes:
    body = await request.body()
    settings: DeviceChannelSettings = ctx.settings  # type: ignore[assignment]
    key = settings.hmac_key.get_secret_value().encode()
    if key and not hmac.verify(key, body, request.headers.get(hmac.HEADER)):
        raise Unauthorized("missing or invalid X-Hmac-Signature")
    return body


def _reply(content: Any | None) -> Response:
    """Apple's shapes: compact JSON, or an empty body (signed by `hmac.SignResponses`)."""
    body = b"" if content is None else json.dumps(content, separators=(",", ":")).encode()
    return Response(body, 200, media_type="application/json" if content is not None else None)


async def _handle(
    ctx: Ctx,
    uow: DeviceChannelUnitOfWork,
    enrollment_id: str,
    user_channel: bool,
    endpoint: ddm.Endpoint,
    data: bytes | None,
) -> Response:
    now = ctx.clock.now()
    if endpoint.kind is ddm.EndpointKind.STATUS:
        await service.ingest_status(uow, enrollment_id, data or b"", now)
        await uow.commit()
        return _reply(None)
    device = await uow.devices.get(enrollment_id)
    if device is None:  # first contact: create it (the only write on a sync)
        device = await service.device_for_sync(uow, enrollment_id, now)
        await uow.commit()
    manifest = await service.manifest_for(uow, device, user_channel)
    if endpoint.kind is ddm.EndpointKind.TOKENS:
        return _reply(ddm.TokensResponse(manifest.token, device.manifest_changed_at).to_json())
    if endpoint.kind is ddm.EndpointKind.DECLARATION_ITEMS:
        return _reply(manifest.items_response())
    assert endpoint.category is not None and endpoint.identifier is not None
    decl = manifest.find(endpoint.category, endpoint.identifier)
    if decl is None:
        raise NotFound(
            f"declaration {endpoint.category}/{endpoint.identifier} "
            "is not in this device's manifest"
        )
    return _reply(decl.to_json())


def _user(enrollment_type: str | None) -> bool:
    return (enrollment_type or "").lower() == "user"


@router.get("/ddm/tokens", summary="TokensResponse for the device")
async def tokens(
    ctx: Ctx, request: Request, eid: EnrollmentId, etype: EnrollmentType = None
) -> Response:
    await _verified_body(ctx, request)
    async with ctx.uow() as uow:
        return await _handle(ctx, uow, eid, _user(etype), ddm.parse_endpoint("tokens"), None)


@router.get("/ddm/declaration-items", summary="DeclarationItemsResponse (the device's manifest)")
async def declaration_items(
    ctx: Ctx, request: Request, eid: EnrollmentId, etype: EnrollmentType = None
) -> Response:
    await _verified_body(ctx, request)
    async with ctx.uow() as uow:
        return await _handle(
            ctx, uow, eid, _user(etype), ddm.parse_endpoint("declaration-items"), None
        )


@router.get("/ddm/declaration/{category}/{identifier}", summary="One declaration of the manifest")
async def declaration(
    ctx: Ctx,
    request: Request,
    category: str,
    identifier: str,
    eid: EnrollmentId,
    etype: EnrollmentType = None,
) -> Response:
    await _verified_body(ctx, request)
    try:
        endpoint = ddm.parse_endpoint(f"declaration/{category}/{identifier}")
    except ddm.DDMProtocolError as exc:
        raise NotFound(str(exc)) from exc
    async with ctx.uow() as uow:
        return await _handle(ctx, uow, eid, _user(etype), endpoint, None)


@router.put("/ddm/status", summary="Status report; answered with an empty 200")
async def status(
    ctx: Ctx, request: Request, eid: EnrollmentId, etype: EnrollmentType = None
) -> Response:
    body = await _verified_body(ctx, request)
    async with ctx.uow() as uow:
        return await _handle(ctx, uow, eid, _user(etype), ddm.parse_endpoint("status"), body)


@router.put("/mdm/checkin", summary="Raw MDM check-in plist (MessageType DeclarativeManagement)")
async def checkin(ctx: Ctx, request: Request) -> Response:
    body = await _verified_body(ctx, request)
    try:
        msg = ddm.parse_declarative_checkin(body)
    except ddm.DDMProtocolError as exc:
        raise MalformedRequest(str(exc)) from exc
    async with ctx.uow() as uow:
        return await _handle(
            ctx, uow, msg.enrollment_id, msg.is_user_channel, msg.endpoint, msg.checkin.data
        )
