"""Bearer tokens with scopes (`<service>:read`, `<service>:write`).

Tokens are JWTs signed with HS256 under the suite's shared `auth_secret`; the `scope` claim
is a space-separated list, as in OAuth 2.0. `<service>:write` implies `<service>:read`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import jwt

from managed_os.errors import Forbidden, Unauthorized

ISSUER = "managed-os"
SERVICES = ("catalog", "declarations", "device-channel", "compliance")
ALL_SCOPES = tuple(f"{s}:{a}" for s in SERVICES for a in ("read", "write"))


def issue_token(
    secret: str,
    scopes: Iterable[str],
    *,
    subject: str = "admin",
    ttl: timedelta | None = None,
    now: datetime | None = None,
) -> str:
    if not secret:
        raise ValueError("an auth secret is required to issue tokens")
    issued = now or datetime.now(UTC)
    claims: dict[str, object] = {
        "iss": ISSUER,
        "sub": subject,
        "iat": int(issued.timestamp()),
        "scope": " ".join(sorted(set(scopes))),
    }
    if ttl is not None:
        claims["exp"] = int((issued + ttl).timestamp())
    return jwt.encode(claims, secret, algorithm="HS256")


def verify_token(secret: str, token: str) -> frozenset[str]:
    """Returns the token's scopes, or raises `Unauthorized`."""
    if not secret:
        raise Unauthorized("this service has no auth secret configured; API access is disabled")
    try:
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], issuer=ISSUER, options={"require": ["iss"]}
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("bearer token has expired") from exc
    except jwt.PyJWTError as exc:
        raise Unauthorized("bearer token is invalid") from exc
    return frozenset(str(claims.get("scope", "")).split())


def require(scopes: frozenset[str], needed: str) -> None:
    service, _, action = needed.partition(":")
    if needed in scopes or (action == "read" and f"{service}:write" in scopes):
        return
    raise Forbidden(f"this token lacks the '{needed}' scope", details={"required": needed})
