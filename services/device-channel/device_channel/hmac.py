"""NanoMDM's DDM HMAC: base64(HMAC-SHA256(key, body)) in `X-Hmac-Signature`, the empty body
included for GETs. Requests are verified and responses signed with the same key."""

from __future__ import annotations

import base64
import hashlib
import hmac as _hmac

HEADER = "X-Hmac-Signature"


def sign(key: bytes, body: bytes) -> str:
    return base64.b64encode(_hmac.new(key, body, hashlib.sha256).digest()).decode()


def verify(key: bytes, body: bytes, signature: str | None) -> bool:
    if not signature:
        return False
    return _hmac.compare_digest(sign(key, body), signature.strip())
