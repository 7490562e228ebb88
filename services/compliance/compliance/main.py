"""The compliance service's spec."""

from __future__ import annotations

from compliance import models, service
from compliance.repository import ComplianceUnitOfWork
from compliance.router import router
from compliance.settings import ComplianceSettings
from managed_os.cloudevents import CloudEvent
from managed_os.events import TOPIC_DEVICES, DeviceManifestChanged, DeviceStatusReported, from_event
from managed_os.service import ConsumerSpec, ServiceContext, ServiceSpec


def consumers(ctx: ServiceContext) -> list[ConsumerSpec]:
    async def on_device_event(uow: ComplianceUnitOfWork, event: CloudEvent) -> None:
        payload = from_event(event)
        if isinstance(payload, DeviceStatusReported):
            await service.on_status(uow, payload, ctx.clock.now())
        elif isinstance(payload, DeviceManifestChanged):
            await service.on_manifest(uow, payload, ctx.clock.now())

    return [ConsumerSpec(group="devices", topics=[TOPIC_DEVICES], apply=on_device_event)]


SPEC = ServiceSpec(
    name="compliance",
    title="Managed OS — compliance",
    description="Who is up to date, pending, overdue or failing.",
    settings_cls=ComplianceSettings,
    metadata=models.metadata,
    outbox_table=models.outbox,
    inbox_table=models.processed_events,
    uow_cls=ComplianceUnitOfWork,
    migrations="compliance:migrations",
    routers=[router],
    consumers=consumers,
)
