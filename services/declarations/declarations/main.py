"""The declarations service's spec."""

from __future__ import annotations

from typing import cast

from declarations import models, service
from declarations.bootstrap import bootstrap
from declarations.repository import DeclarationsUnitOfWork
from declarations.router import router
from declarations.settings import DeclarationsSettings
from managed_os.cloudevents import CloudEvent
from managed_os.events import (
    TOPIC_POLICIES,
    TOPIC_RELEASES,
    ReleasePublished,
    ReleaseUpdated,
    from_event,
)
from managed_os.service import ConsumerSpec, ServiceContext, ServiceSpec


def consumers(ctx: ServiceContext) -> list[ConsumerSpec]:
    async def on_release(uow: DeclarationsUnitOfWork, event: CloudEvent) -> None:
        payload = from_event(event)
        if isinstance(payload, ReleasePublished | ReleaseUpdated):
            await service.on_release(uow, payload.release, ctx.clock.now())

    return [ConsumerSpec(group="releases", topics=[TOPIC_RELEASES], apply=on_release)]


async def on_start(ctx: ServiceContext) -> None:
    settings = cast(DeclarationsSettings, ctx.settings)
    if settings.catalog_url:
        ctx.spawn(bootstrap(settings, ctx.uow, ctx.clock), name="declarations-bootstrap")


SPEC = ServiceSpec(
    name="declarations",
    title="Managed OS — declarations",
    description="Managed OS policies per blueprint, compiled into versioned DDM declarations.",
    settings_cls=DeclarationsSettings,
    metadata=models.metadata,
    outbox_table=models.outbox,
    inbox_table=models.processed_events,
    uow_cls=DeclarationsUnitOfWork,
    migrations="declarations:migrations",
    routers=[router],
    publishes=[TOPIC_POLICIES],
    consumers=consumers,
    on_start=on_start,
)
