"""NanoMDM's DDM HMAC: base64(HMAC-SHA256(key, body)) in `X-Hmac-Signature`, the empty body
included for GETs. Requests are verified and every response on the device paths (errors
included) is signed with the same key, for NanoMDM's `-dm-recv-hmac-key`."""

from __future__ import annotations

import base64
import hmac as _hmac

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "X-Hmac-Signature"
DEVICE_PATHS = ("/ddm/", "/mdm/")
_HEADER = HEADER.lower().encode()


def sign(key: bytes, body: bytes) -> str:
    return base64.b64encode(_hmac.digest(key, body, "sha256")).decode()


def verify(key: bytes, body: bytes, signature: str | None) -> bool:
    if not signature:
        return False
    return _hmac.compare_digest(sign(key, body), signature.strip())


class SignResponses:
    """Buffers device-path responses (they are small) and adds the signature header."""

    def __init__(self, app: ASGIApp, key: bytes) -> None:
        self.app, self.key = app, key
        self.empty = sign(key, b"").encode()  # a status report's answer, every time

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(DEVICE_PATHS):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                assert start is not None
                body = b"".join(chunks)
                headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
                headers += [
                    (b"content-length", str(len(body)).encode()),
                    (_HEADER, sign(self.key, body).encode() if body else self.empty),
                ]
                await send({**start, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, capture)
