"""Pushes: tell a Mac its manifest changed with a `DeclarativeManagement` MDM command (the
TokensResponse in `Data`), sent through the MDM server's enqueue API — NanoMDM's
`PUT {base}/v1/enqueue/{id,id,...}` with basic auth. Never on the request path: status
ingestion and policy changes only write a queue row (same transaction); this worker drains it.

Batching: Macs whose new DeclarationsToken is the same (same blueprint, same facts) share one
command and one enqueue call. Concurrency: `push_concurrency` calls in flight. Retries:
exponential back-off per Mac (capped at an hour); a crash mid-send is retried when the lease
runs out, so no pending push is lost.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import httpx

from device_channel.repository import DeviceChannelUnitOfWork, PendingPush
from device_channel.settings import DeviceChannelSettings
from managed_os import ddm
from managed_os.clock import Clock
from managed_os.tasks import every

log = logging.getLogger(__name__)
MAX_BACKOFF = timedelta(hours=1)


def backoff(attempts: int) -> timedelta:
    return min(MAX_BACKOFF, timedelta(seconds=5 * 2 ** max(0, attempts - 1)))


class PushSender:
    def __init__(
        self,
        settings: DeviceChannelSettings,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base = settings.mdm_url.rstrip("/")
        self.auth = (settings.mdm_api_user, settings.mdm_api_key.get_secret_value())
        self.client = httpx.AsyncClient(timeout=30, transport=transport)

    async def send(
        self, enrollment_ids: Sequence[str], token: str, now: datetime
    ) -> dict[str, str]:
        """One DeclarativeManagement command for these Macs. Returns the Macs it failed for,
        with why; raises when the call as a whole failed. NanoMDM answers 200 when every id
        was enqueued and pushed, 207 with a per-id `status` when only some were."""
        tokens = ddm.TokensResponse(token, now).to_json()
        body = ddm.declarative_management_command(tokens, str(uuid.uuid4()).upper())
        response = await self.client.put(
            f"{self.base}/v1/enqueue/{','.join(enrollment_ids)}",
            content=body,
            auth=self.auth,
            headers={"Content-Type": "application/x-apple-aspen-mdm"},
        )
        response.raise_for_status()
        if response.status_code != 207:
            return {}
        try:
            status = response.json().get("status") or {}
        except ValueError:
            return {eid: "207 without a readable per-id status" for eid in enrollment_ids}
        failed = {}
        for eid in enrollment_ids:
            entry = status.get(eid) or {}
            error = entry.get("enqueue_error") or entry.get("push_error")
            if error or eid not in status:
                failed[eid] = str(error or "not in the MDM server's answer")
        return failed

    async def aclose(self) -> None:
        await self.client.aclose()


async def drain_once(
    uow_factory: Callable[[], DeviceChannelUnitOfWork],
    sender: PushSender,
    settings: DeviceChannelSettings,
    clock: Clock,
) -> tuple[int, int]:
    """Lease the due pushes, send them in batches, record the outcome. Returns (sent, failed)."""
    now = clock.now()
    limit = settings.push_batch_size * settings.push_concurrency
    uow = uow_factory()
    async with uow:
        due = await uow.pushes.lease(now, limit, timedelta(seconds=settings.push_lease_seconds))
        await uow.commit()
    if not due:
        return 0, 0
    by_token: dict[str, list[PendingPush]] = defaultdict(list)
    for push in due:
        by_token[push.declarations_token].append(push)
    batches = [
        group[i : i + settings.push_batch_size]
        for group in by_token.values()
        for i in range(0, len(group), settings.push_batch_size)
    ]
    gate = asyncio.Semaphore(settings.push_concurrency)
    outcomes: list[tuple[list[PendingPush], str | None]] = []

    async def attempt(batch: list[PendingPush]) -> None:
        try:
            failed = await sender.send(
                [p.enrollment_id for p in batch], batch[0].declarations_token, now
            )
        except (httpx.HTTPError, OSError) as exc:
            if len(batch) > 1:
                # One bad id (not enrolled in the MDM server, say) must not hold back the
                # rest: try each on its own, so back-off applies only to those that fail.
                for single in batch:
                    await attempt([single])
                return
            outcomes.append((batch, f"{exc.__class__.__name__}: {exc}"))
            return
        outcomes.append(([p for p in batch if p.enrollment_id not in failed], None))
        for p in batch:
            if p.enrollment_id in failed:
                outcomes.append(([p], failed[p.enrollment_id]))

    async def one(batch: list[PendingPush]) -> None:
        async with gate:
            await attempt(batch)

    await asyncio.gather(*(one(b) for b in batches))
    uow = uow_factory()
    async with uow:
        for batch, error in outcomes:
            if error is None:
                await uow.pushes.sent(batch)
            else:
                await uow.pushes.failed(batch, now, error, backoff)
        await uow.commit()
    failed = sum(len(b) for b, e in outcomes if e is not None)
    if failed:
        log.warning("pushes failed; will retry", extra={"failed": failed})
    return len(due) - failed, failed


async def run(
    uow_factory: Callable[[], DeviceChannelUnitOfWork],
    sender: PushSender,
    settings: DeviceChannelSettings,
    clock: Clock,
) -> None:
    await every(
        settings.push_interval_seconds,
        "push worker",
        lambda: drain_once(uow_factory, sender, settings, clock),
    )
