"""Service-to-service REST reads: every page of a paginated `/v1` list, and retrying a start-up
read until the other service answers. (Runtime traffic between services goes over the bus.)"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import httpx
from sqlalchemy.exc import SQLAlchemyError

from managed_os import auth

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRYABLE: tuple[type[Exception], ...] = (httpx.HTTPError, ValueError, KeyError, SQLAlchemyError)


async def fetch_all(
    client: httpx.AsyncClient, url: str, token: str, page: int = 500
) -> list[dict[str, Any]]:
    """Every item of a `{items, total}` list endpoint, `page` at a time (a list without
    `total` is taken as complete)."""
    items: list[dict[str, Any]] = []
    while True:
        response = await client.get(
            url,
            params={"limit": page, "offset": len(items)},
            headers={"Authorization": f"Bearer {token}"},
        )
        response.raise_for_status()
        body = response.json()
        items += body["items"]
        if not body["items"] or len(items) >= body.get("total", len(items)):
            return items


async def until_it_works(
    operation: Callable[[], Awaitable[T]], *, what: str, first_delay: float, max_delay: float = 300
) -> T:
    """Run `operation` until it succeeds, waiting `first_delay` (doubling, capped) between
    tries and logging why each one failed."""
    delay = first_delay
    while True:
        try:
            return await operation()
        except RETRYABLE as exc:
            log.warning(f"{what} failed; retrying", extra={"error": str(exc), "in": delay})
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)


Fetch = Callable[[str], Awaitable[list[dict[str, Any]]]]


async def bootstrap_from(
    base_url: str,
    secret: str,
    *,
    scopes: Sequence[str],
    subject: str,
    what: str,
    apply: Callable[[Fetch], Awaitable[T]],
    retry_seconds: float,
    page: int = 500,
    transport: httpx.AsyncBaseTransport | None = None,
) -> T:
    """A service's start-up read of another service: `apply(fetch)` reads what it needs with
    `fetch(path)` (every item of a `/v1` list, with a token of `scopes` signed with `secret`)
    and stores it; it is run until it works (`until_it_works`), and its result returned."""
    token = auth.issue_token(secret, list(scopes), subject=subject)
    base = base_url.rstrip("/")
    async with httpx.AsyncClient(timeout=30, transport=transport) as client:

        async def fetch(path: str) -> list[dict[str, Any]]:
            return await fetch_all(client, f"{base}{path}", token, page=page)

        return await until_it_works(lambda: apply(fetch), what=what, first_delay=retry_seconds)
