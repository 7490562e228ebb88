"""Rebuild the release view from the catalog's REST API at start: a new replica, a restored
database or a consumer group reset must not leave policies compiled against a partial view.
Events keep the view current afterwards; this only fills gaps (unchanged releases are no-ops).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx

from declarations import service
from declarations.repository import DeclarationsUnitOfWork
from declarations.settings import DeclarationsSettings
from managed_os import auth
from managed_os.clock import Clock
from managed_os.events import ReleaseData
from managed_os.rest import fetch_all, until_it_works

log = logging.getLogger(__name__)
PATIENCE = 10  # tries to wait for every catalog source before taking what it has


async def bootstrap(
    settings: DeclarationsSettings,
    uow_factory: Callable[[], DeclarationsUnitOfWork],
    clock: Clock,
    transport: httpx.AsyncBaseTransport | None = None,
) -> int:
    """Load every release the catalog knows; retry until it answers. Returns how many
    policies changed as a result."""
    base = settings.catalog_url.rstrip("/")
    token = auth.issue_token(
        settings.auth_secret.get_secret_value(), ["catalog:read"], subject="declarations"
    )
    tries = 0
    async with httpx.AsyncClient(timeout=30, transport=transport) as client:

        async def once() -> int:
            nonlocal tries
            tries += 1
            # Until every catalog source has synced once, the list is partial (GDMF's 17
            # releases before SOFA's 129): wait, but not forever for a source that fails.
            sources = await fetch_all(client, f"{base}/v1/sources", token)
            if tries <= PATIENCE and not (sources and all(s["last_success"] for s in sources)):
                raise ValueError("the catalog has not synced all its sources yet")
            releases = [
                ReleaseData.model_validate(r)
                for r in await fetch_all(client, f"{base}/v1/releases", token)
            ]
            if not releases:
                raise ValueError("the catalog lists no releases yet")
            uow = uow_factory()
            async with uow:
                changed = await service.on_releases(uow, releases, clock.now())
                await uow.commit()
            log.info(
                "release view rebuilt from the catalog",
                extra={"releases": len(releases), "policies_changed": changed},
            )
            return changed

        return await until_it_works(
            once, what="catalog bootstrap", first_delay=settings.bootstrap_retry_seconds
        )
