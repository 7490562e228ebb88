"""Rebuild the policy view from the declarations service's REST API at start, so a new replica
or a restored database serves current manifests before the next PolicyPublished arrives.
Older revisions than the stored ones are ignored (`PolicyStore.put`); the request path never
waits for this."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import httpx
from sqlalchemy.exc import SQLAlchemyError

from device_channel import service
from device_channel.repository import DeviceChannelUnitOfWork
from device_channel.settings import DeviceChannelSettings
from managed_os import auth
from managed_os.clock import Clock
from managed_os.policy import Candidate, Policy

log = logging.getLogger(__name__)
PAGE = 200


async def fetch_policies(client: httpx.AsyncClient, base: str, token: str) -> list[Policy]:
    policies, offset = [], 0
    while True:
        response = await client.get(
            f"{base.rstrip('/')}/v1/policies",
            params={"limit": PAGE, "offset": offset},
            headers={"Authorization": f"Bearer {token}"},
        )
        response.raise_for_status()
        page = response.json()
        policies += [
            Policy(
                blueprint_id=p["blueprint_id"],
                revision=p["revision"],
                token=p["token"],
                candidates=[Candidate.model_validate(c) for c in p["candidates"]],
            )
            for p in page["items"]
        ]
        offset += PAGE
        if offset >= page["total"]:
            return policies


async def bootstrap(
    settings: DeviceChannelSettings,
    uow_factory: Callable[[], DeviceChannelUnitOfWork],
    clock: Clock,
    retry_seconds: float = 5.0,
) -> int:
    """Store every newer policy; retry with back-off until the declarations service answers.
    Returns how many policies were newer than the stored ones."""
    token = auth.issue_token(
        settings.auth_secret.get_secret_value(), ["declarations:read"], subject="device-channel"
    )
    delay = retry_seconds
    async with httpx.AsyncClient(timeout=30) as client:
        while True:
            try:
                policies = await fetch_policies(client, settings.declarations_url, token)
                stored = 0
                for policy in policies:
                    uow = uow_factory()
                    async with uow:
                        stored += await service.on_policy(uow, policy, clock.now())
                        await uow.commit()
                log.info("policy view rebuilt", extra={"policies": len(policies), "newer": stored})
                return stored
            except (httpx.HTTPError, ValueError, KeyError, SQLAlchemyError) as exc:
                log.warning("policy bootstrap failed; retrying", extra={"error": str(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 300)
