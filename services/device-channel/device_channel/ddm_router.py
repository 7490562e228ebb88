"""DDM endpoints as NanoMDM's `-dm` hook forwards them, and the raw check-in for servers that
forward check-ins whole. Responses are exactly Apple's shapes, signed when a key is set."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError

from device_channel import hmac, service, sync
from device_channel.settings import DeviceChannelSettings
from device_channel.state import DeviceChannelState
from managed_os import ddm
from managed_os.errors import MalformedRequest, NotFound, Unauthorized
from managed_os.service import ServiceContext

router = APIRouter(tags=["ddm"])
# The device headers are read by hand, not as FastAPI parameters: on the two routes every Mac
# polls, parameter resolution cost more than the whole cached answer. Documented here instead,
# and refused with the same 422 shape a parameter would give.
DEVICE_HEADERS = {
    "parameters": [
        {
            "name": "X-Enrollment-ID",
            "in": "header",
            "required": True,
            "schema": {"type": "string", "minLength": 1, "maxLength": 200},
        },
        {
            "name": "X-Enrollment-Type",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "`User` (any case) marks the user channel.",
        },
    ]
}


def _ctx(request: Request) -> ServiceContext:
    ctx: ServiceContext = request.app.state.ctx
    return ctx


def _device(request: Request) -> tuple[str, bool]:
    """The enrollment id (1–200 characters, else 422) and whether this is the user channel."""
    headers = request.headers
    eid = headers.get("x-enrollment-id")
    if eid is None or not 1 <= len(eid) <= 200:
        problem = (
            ("missing", "Field required")
            if eid is None
            else ("string_length", "String should have 1 to 200 characters")
        )
        raise RequestValidationError(
            [{"type": problem[0], "loc": ("header", "X-Enrollment-ID"), "msg": problem[1]}]
        )
    return eid, (headers.get("x-enrollment-type") or "").lower() == "user"


async def _verified_body(ctx: ServiceContext, request: Request) -> bytes:
    body = await request.body()
    settings: DeviceChannelSettings = ctx.settings  # type: ignore[assignment]
    key = settings.hmac_key.get_secret_value().encode()
    if key and not hmac.verify(key, body, request.headers.get(hmac.HEADER)):
        raise Unauthorized("missing or invalid X-Hmac-Signature")
    return body


def _json(body: bytes) -> Response:
    """Apple's shapes: compact JSON bytes (signed by `hmac.SignResponses`)."""
    return Response(body, 200, media_type="application/json")


async def _handle(
    ctx: ServiceContext,
    enrollment_id: str,
    user_channel: bool,
    endpoint: ddm.Endpoint,
    data: bytes | None,
) -> Response:
    if endpoint.kind is ddm.EndpointKind.STATUS:
        report = service.parse_report(data or b"")
        state: DeviceChannelState = ctx.state
        assert state.status_writer is not None
        await state.status_writer.write(enrollment_id, report)
        return Response(b"", 200)
    view = await sync.view(ctx, enrollment_id, user_channel)
    if endpoint.kind is ddm.EndpointKind.TOKENS:
        return _json(view.tokens_body())
    if endpoint.kind is ddm.EndpointKind.DECLARATION_ITEMS:
        return _json(view.manifest.items_body)
    assert endpoint.category is not None and endpoint.identifier is not None
    body = view.manifest.declaration_body(endpoint.category, endpoint.identifier)
    if body is None:
        raise NotFound(
            f"declaration {endpoint.category}/{endpoint.identifier} "
            "is not in this device's manifest"
        )
    return _json(body)


# Parsed once: the request path of the two hot routes does not re-parse them.
_TOKENS = ddm.parse_endpoint("tokens")
_ITEMS = ddm.parse_endpoint("declaration-items")
_STATUS = ddm.parse_endpoint("status")


@router.get("/ddm/tokens", summary="TokensResponse for the device", openapi_extra=DEVICE_HEADERS)
async def tokens(request: Request) -> Response:
    ctx = _ctx(request)
    eid, user = _device(request)
    await _verified_body(ctx, request)
    return await _handle(ctx, eid, user, _TOKENS, None)


@router.get(
    "/ddm/declaration-items",
    summary="DeclarationItemsResponse (the device's manifest)",
    openapi_extra=DEVICE_HEADERS,
)
async def declaration_items(request: Request) -> Response:
    ctx = _ctx(request)
    eid, user = _device(request)
    await _verified_body(ctx, request)
    return await _handle(ctx, eid, user, _ITEMS, None)


@router.get(
    "/ddm/declaration/{category}/{identifier}",
    summary="One declaration of the manifest",
    openapi_extra=DEVICE_HEADERS,
)
async def declaration(request: Request, category: str, identifier: str) -> Response:
    ctx = _ctx(request)
    eid, user = _device(request)
    await _verified_body(ctx, request)
    try:
        endpoint = ddm.parse_endpoint(f"declaration/{category}/{identifier}")
    except ddm.DDMProtocolError as exc:
        raise NotFound(str(exc)) from exc
    return await _handle(ctx, eid, user, endpoint, None)


@router.put(
    "/ddm/status", summary="Status report; answered with an empty 200", openapi_extra=DEVICE_HEADERS
)
async def status(request: Request) -> Response:
    ctx = _ctx(request)
    eid, user = _device(request)
    body = await _verified_body(ctx, request)
    return await _handle(ctx, eid, user, _STATUS, body)


@router.put("/mdm/checkin", summary="Raw MDM check-in plist (MessageType DeclarativeManagement)")
async def checkin(request: Request) -> Response:
    ctx = _ctx(request)
    body = await _verified_body(ctx, request)
    try:
        msg = ddm.parse_declarative_checkin(body)
    except ddm.DDMProtocolError as exc:
        raise MalformedRequest(str(exc)) from exc
    return await _handle(
        ctx, msg.enrollment_id, msg.is_user_channel, msg.endpoint, msg.checkin.data
    )
