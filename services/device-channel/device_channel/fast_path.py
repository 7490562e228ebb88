"""The three requests every Mac sends most, answered in front of the whole app.

`GET /ddm/tokens` and `GET /ddm/declaration-items` with a valid `X-Enrollment-ID`, no body, a
correct signature (when a key is set) and the device and its policy in the sync cache are
answered here with the very bytes the routes would send (`sync.cached_view` is the routes'
own hit path). `PUT /ddm/status` with a valid `X-Enrollment-ID`, a declared body within the
limit, a correct signature and a report that parses is handed to the status writer here
(`service.parse_report` and `StatusWriter.write`, exactly what the route calls) and answered
with the route's empty 200 once committed; an error of the write gets the response the app's
exception handler for it gives. Everything else, a miss, a bad header, a wrong signature, a
malformed report, a query string, goes to the full app (with the body it sent), which
answers it as the routes do.

This is the app's `front` (`ServiceApp`): it runs before FastAPI's own middleware and the
shared one, so what those do for these requests it does itself: it records the request in
the request metrics, signs the response (the same key as `SignResponses`) and leaves
oversized or undeclared bodies to the body limit of the full app. What it skips, FastAPI's
request handling, the routing and five middleware layers, cost more than the answers.
"""

from __future__ import annotations

import hmac as _hmac
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from device_channel import hmac, service, sync
from device_channel.state import DeviceChannelState
from managed_os.app import ServiceApp
from managed_os.errors import MalformedRequest
from managed_os.http import HttpMetrics, replaying

_JSON = (b"content-type", b"application/json")
_SIGNATURE = hmac.HEADER.lower().encode()


@dataclass(frozen=True)
class _Route:
    """What the metrics read of a matched route."""

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
    length: bytes | None = None  # Content-Length
    chunked: bool = False

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
            elif name == b"content-length":
                found.length = value
            elif name == b"transfer-encoding":
                found.chunked = True
        return found

    def enrollment(self) -> str | None:
        eid = self.enrollment_id
        return eid.decode("latin-1") if eid is not None and 1 <= len(eid) <= 200 else None


class DeviceFront:
    def __init__(
        self, app: ServiceApp, key: bytes, max_body_bytes: int, metrics: HttpMetrics
    ) -> None:
        self.app, self.key, self.max_body, self.metrics = app, key, max_body_bytes, metrics
        # A GET is signed over the empty body, as is a status report's answer.
        self.empty = hmac.sign(key, b"").encode() if key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = _ROUTES.get((scope["method"], scope["path"]))
        if route is None or scope.get("query_string"):
            await self.app.full(scope, receive, send)
            return
        started = time.perf_counter()
        if route is _STATUS:
            status, receive = await self._status(scope, receive, send)
        else:
            status = await self._sync(route, scope, send)
        if status is None:  # not answered here (a body read is given again)
            await self.app.full(scope, receive, send)
        else:
            elapsed = time.perf_counter() - started
            self.metrics.observe(scope["method"], route.path, status, elapsed)

    async def _sync(self, route: _Route, scope: Scope, send: Send) -> int | None:
        """The status answered, or None when the full app must answer."""
        found = _DeviceHeaders.of(scope)
        eid = found.enrollment()
        signature = found.signature
        if (
            (found.length not in (None, b"0") or found.chunked)  # a body: the route verifies it
            or eid is None
            or (
                self.empty is not None
                and (signature is None or not _hmac.compare_digest(signature.strip(), self.empty))
            )
        ):
            return None
        state: DeviceChannelState = self.app.state.ctx.state
        etype = found.enrollment_type
        view = sync.cached_view(state, eid, etype is not None and etype.lower() == b"user")
        if view is None:
            return None
        body = view.tokens_body() if route is _TOKENS else view.manifest.items_body
        await self._send(send, 200, body, [_JSON])
        return 200

    async def _status(
        self, scope: Scope, receive: Receive, send: Send
    ) -> tuple[int | None, Receive]:
        """The status answered (or None when the full app must answer), and the `receive` to
        answer with (the body, when it was read, given again)."""
        found = _DeviceHeaders.of(scope)
        eid = found.enrollment()
        if (
            eid is None
            or found.chunked
            or found.length is None
            or not found.length.isdigit()
            or int(found.length) > self.max_body
        ):
            return None, receive  # the full app refuses or reads it
        body, receive = await _buffered(receive)
        signature = found.signature
        if self.key and (
            signature is None
            or not _hmac.compare_digest(hmac.sign(self.key, body).encode(), signature.strip())
        ):
            return None, receive
        try:
            report = service.parse_report(body)
        except MalformedRequest:
            return None, receive
        state: DeviceChannelState = self.app.state.ctx.state
        assert state.status_writer is not None
        try:
            await state.status_writer.write(eid, report)
        except Exception as exc:
            handler = _handler_for(self.app.exception_handlers, exc)
            if handler is None:
                raise
            scope["app"] = self.app
            response = handler(Request(scope, receive), exc)
            if inspect.isawaitable(response):
                response = await response
            body = bytes(response.body)
            await self._send(send, response.status_code, body, response.raw_headers)
            return response.status_code, receive
        await self._send(send, 200, b"", [])
        return 200, receive

    async def _send(
        self, send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        headers = [h for h in headers if h[0] != b"content-length"]
        headers.append((b"content-length", b"%d" % len(body)))
        if self.key:
            signature = hmac.sign(self.key, body).encode() if body else self.empty
            assert signature is not None
            headers.append((_SIGNATURE, signature))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _buffered(receive: Receive) -> tuple[bytes, Receive]:
    """The whole body (within the limit, declared by Content-Length), and a `receive` that
    gives it again to whatever answers the request."""
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


Handler = Callable[[Request, Any], Response | Awaitable[Response]]


def _handler_for(handlers: dict[Any, Handler], exc: Exception) -> Handler | None:
    """The app's handler for `exc`, chosen as Starlette chooses it (nearest class first)."""
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None
