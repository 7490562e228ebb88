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
from managed_os.clock import Clock
from managed_os.events import ReleaseData
from managed_os.rest import Fetch, bootstrap_from

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
    tries = 0

    async def apply(fetch: Fetch) -> int:
        nonlocal tries
        tries += 1
        # Until every catalog source has synced once, the list is partial (GDMF's 17
        # releases before SOFA's 129): wait, but not forever for a source that fails.
        sources = await fetch("/v1/sources")
        if tries <= PATIENCE and not (sources and all(s["last_success"] for s in sources)):
            raise ValueError("the catalog has not synced all its sources yet")
        releases = [ReleaseData.model_validate(r) for r in await fetch("/v1/releases")]
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

    return await bootstrap_from(
        settings.catalog_url,
        settings.auth_secret.get_secret_value(),
        scopes=["catalog:read"],
        subject="declarations",
        what="catalog bootstrap",
        apply=apply,
        retry_seconds=settings.bootstrap_retry_seconds,
        transport=transport,
    )
