"""The read side of a DDM sync: a device's manifest, from the sync cache whenever it can be.

A hit touches no database: the device's snapshot and its blueprint's policy come from the
cache, the manifest from the per-service memo, the response bodies from bytes encoded once.
A miss reads what is missing in one unit of work, taking the cache epoch first (see
`sync_cache`), and creates the device on first contact (the only write of a sync).
"""

from __future__ import annotations

from dataclasses import dataclass

from device_channel import service
from device_channel.repository import DeviceChannelUnitOfWork
from device_channel.state import DeviceChannelState
from device_channel.sync_cache import Absent, DeviceSnapshot
from managed_os.manifest import Manifest
from managed_os.policy import Policy
from managed_os.service import ServiceContext


@dataclass(frozen=True, slots=True)
class SyncView:
    device: DeviceSnapshot
    manifest: Manifest

    def tokens_body(self) -> bytes:
        return self.device.tokens_body(self.manifest)


def cached_view(
    state: DeviceChannelState, enrollment_id: str, user_channel: bool
) -> SyncView | None:
    """The view from memory alone (counted as a hit), or None when the device or its policy
    is not cached."""
    cache = state.cache
    snap = cache.device(enrollment_id)
    if snap is None:
        return None
    policy: Policy | None = None
    if snap.blueprint_id is not None:
        cached = cache.policy(snap.blueprint_id)
        if cached is None:
            return None
        policy = None if isinstance(cached, Absent) else cached
    cache.hits += 1
    return SyncView(snap, state.manifests.get(policy, snap.facts, user_channel=user_channel))


async def view(ctx: ServiceContext, enrollment_id: str, user_channel: bool) -> SyncView:
    state: DeviceChannelState = ctx.state
    hit = cached_view(state, enrollment_id, user_channel)
    if hit is not None:
        return hit
    cache = state.cache
    cache.misses += 1
    snap = cache.device(enrollment_id)
    epoch = cache.epoch()
    uow: DeviceChannelUnitOfWork
    async with ctx.uow() as uow:
        if snap is None:
            snap = await uow.devices.snapshot(enrollment_id)
            if snap is None:
                device = await service.device_for_sync(uow, enrollment_id, ctx.clock.now())
                await uow.commit()
                snap = DeviceSnapshot(device.blueprint_id, device.facts, device.manifest_changed_at)
            cache.put_device(enrollment_id, snap, epoch)
        found: Policy | None = None
        if snap.blueprint_id is not None:
            found = await uow.policies.get(snap.blueprint_id)
            cache.put_policy(snap.blueprint_id, found, epoch)
    return SyncView(snap, state.manifests.get(found, snap.facts, user_channel=user_channel))
