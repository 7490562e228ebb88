"""Rebuild the blueprints' item summaries from the declarations service's REST API at start,
so a new compliance database (or one restored from backup) judges `incompatible` and
`not_managed` right even when the policies topic no longer holds every blueprint's last
`PolicyPublished`. Older revisions than the stored ones are ignored; events keep the view
current after that."""

from __future__ import annotations

import logging
from collections.abc import Callable

from compliance.repository import ComplianceUnitOfWork
from compliance.settings import ComplianceSettings
from managed_os.clock import Clock
from managed_os.policy import PolicyItem
from managed_os.rest import Fetch, bootstrap_from

log = logging.getLogger(__name__)


async def bootstrap(
    settings: ComplianceSettings,
    uow_factory: Callable[[], ComplianceUnitOfWork],
    clock: Clock,
    retry_seconds: float = 5.0,
) -> int:
    """Store every newer blueprint; retry with back-off until declarations answers. Returns
    how many were newer than the stored ones (their Macs are judged again by the sweep)."""

    async def apply(fetch: Fetch) -> int:
        policies = await fetch("/v1/policies")
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

    return await bootstrap_from(
        settings.declarations_url,
        settings.auth_secret.get_secret_value(),
        scopes=["declarations:read"],
        subject="compliance",
        what="blueprint bootstrap",
        apply=apply,
        retry_seconds=retry_seconds,
        page=200,
    )
