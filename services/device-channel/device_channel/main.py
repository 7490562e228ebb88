"""The device-channel service's spec."""

from __future__ import annotations

from typing import cast

from fastapi import FastAPI

from device_channel import models, push, service
from device_channel.bootstrap import bootstrap
from device_channel.ddm_router import router as ddm_router
from device_channel.hmac import SignResponses
from device_channel.repository import DeviceChannelUnitOfWork
from device_channel.router import router
from device_channel.settings import DeviceChannelSettings
from managed_os.cloudevents import CloudEvent
from managed_os.events import TOPIC_DEVICES, TOPIC_POLICIES, PolicyPublished, from_event
from managed_os.policy import Policy
from managed_os.service import ConsumerSpec, ServiceContext, ServiceSpec
from managed_os.settings import ServiceSettings


def consumers(ctx: ServiceContext) -> list[ConsumerSpec]:
    async def on_policy(uow: DeviceChannelUnitOfWork, event: CloudEvent) -> None:
        payload = from_event(event)
        if isinstance(payload, PolicyPublished):
            policy = Policy(
                blueprint_id=payload.blueprint_id,
                revision=payload.revision,
                token=payload.token,
                candidates=payload.candidates,
            )
            await service.on_policy(uow, policy, ctx.clock.now())

    return [ConsumerSpec(group="policies", topics=[TOPIC_POLICIES], apply=on_policy)]


def configure(app: FastAPI, settings: ServiceSettings) -> None:
    key = cast(DeviceChannelSettings, settings).hmac_key.get_secret_value().encode()
    if key:
        app.add_middleware(SignResponses, key=key)


async def on_start(ctx: ServiceContext) -> None:
    settings = cast(DeviceChannelSettings, ctx.settings)
    if settings.declarations_url:
        ctx.spawn(bootstrap(settings, ctx.uow, ctx.clock), name="device-channel-bootstrap")
    if settings.mdm_url:
        sender = push.PushSender(settings)
        ctx.extras["push_sender"] = sender
        ctx.spawn(push.run(ctx.uow, sender, settings, ctx.clock), name="device-channel-push")


async def on_stop(ctx: ServiceContext) -> None:
    sender = ctx.extras.get("push_sender")
    if sender is not None:
        await sender.aclose()


SPEC = ServiceSpec(
    name="device-channel",
    title="Managed OS — device channel",
    description="DDM sync for Macs (NanoMDM -dm compatible) and status ingestion.",
    settings_cls=DeviceChannelSettings,
    metadata=models.metadata,
    outbox_table=models.outbox,
    inbox_table=models.processed_events,
    uow_cls=DeviceChannelUnitOfWork,
    migrations="device_channel:migrations",
    routers=[router, ddm_router],
    publishes=[TOPIC_DEVICES],
    consumers=consumers,
    configure=configure,
    on_start=on_start,
    on_stop=on_stop,
)
