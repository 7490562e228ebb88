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
        while True:
            try:
                releases = await fetch_catalog(client, settings.catalog_url, token)
                if releases:
                    break
                error = "the catalog lists no releases yet (first sync still running?)"
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                error = str(exc)
            log.warning("catalog bootstrap failed; retrying", extra={"error": error})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 300)
    uow = uow_factory()
    async with uow:
        changed = await service.on_releases(uow, releases, clock.now())
        await uow.commit()
    log.info(
        "release view rebuilt from the catalog",
        extra={"releases": len(releases), "policies_changed": changed},
    )
    return changed
