"""Rebuild the policy view from the declarations service's REST API at start, so a new replica
or a restored database serves current manifests before the next PolicyPublished arrives.
Older revisions than the stored ones are ignored (`PolicyStore.put`); the request path never
waits for this."""

from __future__ import annotations

import logging
from collections.abc import Callable

from device_channel import service
from device_channel.repository import DeviceChannelUnitOfWork
from device_channel.settings import DeviceChannelSettings
from managed_os.clock import Clock
from managed_os.policy import Candidate, Policy
from managed_os.rest import Fetch, bootstrap_from

log = logging.getLogger(__name__)


async def bootstrap(
    settings: DeviceChannelSettings,
    uow_factory: Callable[[], DeviceChannelUnitOfWork],
    clock: Clock,
    retry_seconds: float = 5.0,
) -> int:
    """Store every newer policy; retry with back-off until the declarations service answers.
    Returns how many policies were newer than the stored ones."""

    async def apply(fetch: Fetch) -> int:
        policies = [
            Policy(
                blueprint_id=p["blueprint_id"],
                revision=p["revision"],
                token=p["token"],
                candidates=[Candidate.model_validate(c) for c in p["candidates"]],
            )
            for p in await fetch("/v1/policies")
        ]
        stored = 0
        for policy in policies:
            uow = uow_factory()
            async with uow:
                stored += await service.on_policy(uow, policy, clock.now())
                await uow.commit()
        log.info("policy view rebuilt", extra={"policies": len(policies), "newer": stored})
        return stored

    return await bootstrap_from(
        settings.declarations_url,
        settings.auth_secret.get_secret_value(),
        scopes=["declarations:read"],
        subject="device-channel",
        what="policy bootstrap",
        apply=apply,
        retry_seconds=retry_seconds,
        page=200,
    )
