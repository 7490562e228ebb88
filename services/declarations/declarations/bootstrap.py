"""Rebuild the release view from the catalog's REST API at start: a new replica, a restored
database or a consumer group reset must not leave policies compiled against a partial view.
Events keep the view current afterwards; this only fills gaps (unchanged releases are no-ops).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy.exc import SQLAlchemyError

from declarations import service
from declarations.repository import DeclarationsUnitOfWork
from declarations.settings import DeclarationsSettings
from managed_os import auth
from managed_os.clock import Clock
from managed_os.events import ReleaseData

log = logging.getLogger(__name__)
PAGE = 500


async def fetch_catalog(client: httpx.AsyncClient, base: str, token: str) -> list[ReleaseData]:
    headers = {"Authorization": f"Bearer {token}"}
    releases: list[ReleaseData] = []
    offset = 0
    while True:
        response = await client.get(
            f"{base.rstrip('/')}/v1/releases",
            params={"limit": PAGE, "offset": offset},
            headers=headers,
        )
        response.raise_for_status()
        page: dict[str, Any] = response.json()
        releases += [ReleaseData.model_validate(r) for r in page["items"]]
        offset += PAGE
        if offset >= page["total"]:
            return releases


async def _catalog_ready(client: httpx.AsyncClient, base: str, token: str) -> bool:
    response = await client.get(
        f"{base.rstrip('/')}/v1/sources", headers={"Authorization": f"Bearer {token}"}
    )
    response.raise_for_status()
    sources = response.json()["items"]
    return bool(sources) and all(s.get("last_success") for s in sources)


async def bootstrap(
    settings: DeclarationsSettings,
    uow_factory: Callable[[], DeclarationsUnitOfWork],
    clock: Clock,
    transport: httpx.AsyncBaseTransport | None = None,
) -> int:
    """Load every release the catalog knows; retry until it answers. Returns how many
    policies changed as a result."""
    token = auth.issue_token(
        settings.auth_secret.get_secret_value(), ["catalog:read"], subject="declarations"
    )
    delay = settings.bootstrap_retry_seconds
    async with httpx.AsyncClient(timeout=30, transport=transport) as client:
        for attempt in range(1, 1_000_000):
            try:
                # Until every catalog source has synced once, the list is partial (GDMF's 17
                # releases before SOFA's 129): wait, but not forever for a source that fails.
                if attempt <= 10 and not await _catalog_ready(client, settings.catalog_url, token):
                    raise ValueError("the catalog has not synced all its sources yet")
                releases = await fetch_catalog(client, settings.catalog_url, token)
                if not releases:
                    raise ValueError("the catalog lists no releases yet")
                uow = uow_factory()
                async with uow:
                    changed = await service.on_releases(uow, releases, clock.now())
                    await uow.commit()
                break
            except (httpx.HTTPError, ValueError, KeyError, SQLAlchemyError) as exc:
                log.warning("catalog bootstrap failed; retrying", extra={"error": str(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 300)
    log.info(
        "release view rebuilt from the catalog",
        extra={"releases": len(releases), "policies_changed": changed},
    )
    return changed
