"""The two requests every Mac sends most, answered from memory before routing.

`GET /ddm/tokens` and `GET /ddm/declaration-items` with a valid `X-Enrollment-ID`, no body, a
correct signature (when a key is set) and the device and its policy in the sync cache are
answered here with the very bytes the routes would send (`sync.cached_view` is the routes'
own hit path). Everything else, a miss, a bad header, a wrong signature, goes on to the routes,
which answer it in full. This sits inside the shared middleware (metrics, body limit) and
inside `SignResponses`, so those apply unchanged; what it skips is the router and FastAPI's
request handling, which cost more than the cached answer itself.
"""

from __future__ import annotations

import hmac as _hmac
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from device_channel import hmac, sync
from device_channel.state import DeviceChannelState

_HEADERS = [(b"content-type", b"application/json")]


@dataclass(frozen=True)
class _Route:
    """What the metrics middleware reads of a matched route."""

    path: str


_ROUTES = {
    "/ddm/tokens": _Route("/ddm/tokens"),
    "/ddm/declaration-items": _Route("/ddm/declaration-items"),
}


class CachedSyncs:
    def __init__(self, app: ASGIApp, key: bytes) -> None:
        self.app = app
        # A GET is signed over the empty body: one expected signature for every request.
        self.expected = hmac.sign(key, b"").encode() if key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = _ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if route is None or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        eid = etype = signature = None
        body_sent = False
        for name, value in scope["headers"]:  # the first of each, as the routes read them
            if name == b"x-enrollment-id":
                eid = value if eid is None else eid
            elif name == b"x-enrollment-type":
                etype = value if etype is None else etype
            elif name == b"x-hmac-signature":
                signature = value if signature is None else signature
            elif name in (b"content-length", b"transfer-encoding") and value != b"0":
                body_sent = True  # a GET with a body: the route verifies it
        if (
            body_sent
            or eid is None
            or not 1 <= len(eid) <= 200
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
        user = etype is not None and etype.lower() == b"user"
        view = sync.cached_view(state, eid.decode("latin-1"), user)
        if view is None:
            await self.app(scope, receive, send)
            return
        body = view.tokens_body() if route.path == "/ddm/tokens" else view.manifest.items_body
        scope["route"] = route
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % len(body)), *_HEADERS],
            }
        )
        await send({"type": "http.response.body", "body": body})
