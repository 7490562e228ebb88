"""The three requests every Mac sends most, answered before routing.

`GET /ddm/tokens` and `GET /ddm/declaration-items` with a valid `X-Enrollment-ID`, no body, a
correct signature (when a key is set) and the device and its policy in the sync cache are
answered here with the very bytes the routes would send (`sync.cached_view` is the routes'
own hit path). `PUT /ddm/status` with a valid `X-Enrollment-ID`, a correct signature and a
report that parses is handed to the status writer here (`service.parse_report` and
`StatusWriter.write`, exactly what the route calls) and answered with the route's empty 200
once committed; an error of the write gets the response the app's exception handler for it
gives. Everything else, a miss, a bad header, a wrong signature, a malformed report, goes on
to the routes (with the body it sent), which answer it in full. This sits inside the shared
middleware (metrics, body limit) and inside `SignResponses`, so those apply unchanged; what
it skips is the router and FastAPI's request handling, which cost more than the cached
answer itself.
"""

from __future__ import annotations

import hmac as _hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from device_channel import hmac, service, sync
from device_channel.state import DeviceChannelState
from managed_os.errors import MalformedRequest
from managed_os.http import replaying

_HEADERS = [(b"content-type", b"application/json")]
_EMPTY = [(b"content-length", b"0")]


@dataclass(frozen=True)
class _Route:
    """What the metrics middleware reads of a matched route."""

    path: str


_TOKENS = _Route("/ddm/tokens")
_ITEMS = _Route("/ddm/declaration-items")
_STATUS = _Route("/ddm/status")
_ROUTES = {("GET", r.path): r for r in (_TOKENS, _ITEMS)} | {("PUT", _STATUS.path): _STATUS}


@dataclass(slots=True)
class _DeviceHeaders:
    """The first of each header the routes read, as they read them."""

    enrollment_id: bytes | None = None
    enrollment_type: bytes | None = None
    signature: bytes | None = None
    body_declared: bool = False  # a Content-Length other than 0, or a chunked body

    @classmethod
    def of(cls, scope: Scope) -> _DeviceHeaders:
        found = cls()
        for name, value in scope["headers"]:
            if name == b"x-enrollment-id":
                if found.enrollment_id is None:
                    found.enrollment_id = value
            elif name == b"x-enrollment-type":
                if found.enrollment_type is None:
                    found.enrollment_type = value
            elif name == b"x-hmac-signature":
                if found.signature is None:
                    found.signature = value
            elif name in (b"content-length", b"transfer-encoding") and value != b"0":
                found.body_declared = True
        return found

    def enrollment(self) -> str | None:
        eid = self.enrollment_id
        return eid.decode("latin-1") if eid is not None and 1 <= len(eid) <= 200 else None


class CachedSyncs:
    def __init__(self, app: ASGIApp, key: bytes) -> None:
        self.app, self.key = app, key
        # A GET is signed over the empty body: one expected signature for every request.
        self.expected = hmac.sign(key, b"").encode() if key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = _ROUTES.get((scope["method"], scope["path"])) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
        elif route is _STATUS:
            await self._status(scope, receive, send)
        else:
            await self._sync(route, scope, receive, send)

    async def _sync(self, route: _Route, scope: Scope, receive: Receive, send: Send) -> None:
        found = _DeviceHeaders.of(scope)
        eid = found.enrollment()
        signature = found.signature
        if (
            found.body_declared  # a GET with a body: the route verifies it
            or eid is None
            or (
                self.expected is not None
                and (
                    signature is None or not _hmac.compare_digest(signature.strip(), self.expected)
                )
            )
        ):
            await self.app(scope, receive, send)
            return
        state: DeviceChannelState = scope["app"].state.ctx.state
        etype = found.enrollment_type
        view = sync.cached_view(state, eid, etype is not None and etype.lower() == b"user")
        if view is None:
            await self.app(scope, receive, send)
            return
        body = view.tokens_body() if route is _TOKENS else view.manifest.items_body
        scope["route"] = route
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % len(body)), *_HEADERS],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _status(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = _DeviceHeaders.of(scope)
        eid = found.enrollment()
        if eid is None:
            await self.app(scope, receive, send)
            return
        body, receive = await _buffered(receive)
        signature = found.signature
        if self.key and (
            signature is None
            or not _hmac.compare_digest(hmac.sign(self.key, body).encode(), signature.strip())
        ):
            await self.app(scope, receive, send)
            return
        try:
            report = service.parse_report(body)
        except MalformedRequest:
            await self.app(scope, receive, send)
            return
        state: DeviceChannelState = scope["app"].state.ctx.state
        assert state.status_writer is not None
        scope["route"] = _STATUS
        try:
            await state.status_writer.write(eid, report)
        except Exception as exc:
            handler = _handler_for(scope["app"].exception_handlers, exc)
            if handler is None:
                raise
            response = await handler(Request(scope, receive), exc)
            await response(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": _EMPTY})
        await send({"type": "http.response.body", "body": b""})


async def _buffered(receive: Receive) -> tuple[bytes, Receive]:
    """The whole body (the body limit is enforced outside), and a `receive` that gives it
    again to whatever answers the request."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = b"".join(chunks)
    return body, replaying(body, receive)


Handler = Callable[[Request, Exception], Awaitable[Response]]


def _handler_for(handlers: dict[Any, Handler], exc: Exception) -> Handler | None:
    """The app's handler for `exc`, chosen as Starlette chooses it (nearest class first)."""
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None
