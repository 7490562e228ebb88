"""Rebuild the blueprints' item summaries from the declarations service's REST API at start,
so a new compliance database (or one restored from backup) judges `incompatible` and
`not_managed` right even when the policies topic no longer holds every blueprint's last
`PolicyPublished`. Older revisions than the stored ones are ignored; events keep the view
current after that."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx

from compliance.repository import ComplianceUnitOfWork
from compliance.settings import ComplianceSettings
from managed_os import auth
from managed_os.clock import Clock
from managed_os.policy import PolicyItem
from managed_os.rest import fetch_all, until_it_works

log = logging.getLogger(__name__)


async def bootstrap(
    settings: ComplianceSettings,
    uow_factory: Callable[[], ComplianceUnitOfWork],
    clock: Clock,
    retry_seconds: float = 5.0,
) -> int:
    """Store every newer blueprint; retry with back-off until declarations answers. Returns
    how many were newer than the stored ones (their Macs are judged again by the sweep)."""
    token = auth.issue_token(
        settings.auth_secret.get_secret_value(), ["declarations:read"], subject="compliance"
    )
    url = f"{settings.declarations_url.rstrip('/')}/v1/policies"
    async with httpx.AsyncClient(timeout=30) as client:

        async def once() -> int:
            policies = await fetch_all(client, url, token, page=200)
            stored = 0
            async with uow_factory() as uow:
                for p in policies:
                    items = [PolicyItem.model_validate(i) for i in p.get("items") or []]
                    stored += await uow.store.put_blueprint(
                        p["blueprint_id"], p["revision"], items, clock.now()
                    )
                await uow.commit()
            log.info("blueprint items rebuilt", extra={"policies": len(policies), "newer": stored})
            return stored

        return await until_it_works(once, what="blueprint bootstrap", first_delay=retry_seconds)
