"""The compliance service's spec: one batched consumer, the sweep, snapshots and gauges."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

from prometheus_client import Gauge
from sqlalchemy import delete

from compliance import models, service
from compliance.bootstrap import bootstrap
from compliance.repository import ComplianceUnitOfWork
from compliance.router import router
from compliance.settings import ComplianceSettings
from managed_os.cloudevents import CloudEvent
from managed_os.events import TOPIC_COMPLIANCE, TOPIC_DEVICES, TOPIC_POLICIES
from managed_os.service import ConsumerSpec, ServiceContext, ServiceSpec
from managed_os.tasks import every

log = logging.getLogger(__name__)
GROUP = "compliance.events"


def _settings(ctx: ServiceContext) -> ComplianceSettings:
    assert isinstance(ctx.settings, ComplianceSettings)
    return ctx.settings


def stale_after(ctx: ServiceContext) -> timedelta:
    return timedelta(hours=_settings(ctx).stale_after_hours)


def consumers(ctx: ServiceContext) -> list[ConsumerSpec]:
    async def apply_batch(events: Sequence[CloudEvent]) -> None:
        async with ctx.uow() as uow:
            await service.apply_events(uow, GROUP, events, ctx.clock.now(), stale_after(ctx))
            await uow.commit()

    return [
        ConsumerSpec(
            group="events",
            topics=[TOPIC_DEVICES, TOPIC_POLICIES],
            apply_batch=apply_batch,
            max_batch=_settings(ctx).consumer_batch_size,
            members=_settings(ctx).consumer_members,
        )
    ]


async def sweep_all(ctx: ServiceContext) -> int:
    """Judge every Mac that is due, one transaction per sweep batch."""
    settings, total = _settings(ctx), 0
    while True:
        async with ctx.uow() as uow:
            n = await service.sweep(
                uow, ctx.clock.now(), stale_after(ctx), settings.sweep_batch_size
            )
            await uow.commit()
        total += n
        if n < settings.sweep_batch_size:
            return total


async def snapshot(ctx: ServiceContext) -> None:
    settings = _settings(ctx)
    now = ctx.clock.now()
    async with ctx.uow() as uow:
        await uow.store.snapshot(now.date())
        cutoff = now - timedelta(days=settings.inbox_retention_days)
        await uow.conn.execute(
            delete(models.processed_events).where(models.processed_events.c.processed_at < cutoff)
        )
        await uow.commit()


def _gauge_updater(ctx: ServiceContext) -> Callable[[], Awaitable[None]]:
    gauge = Gauge(
        "mos_compliance_devices",
        "Macs per compliance state per blueprint",
        ["blueprint_id", "state"],
        registry=ctx.metrics.registry,
    )

    async def update() -> None:
        async with ctx.uow() as uow:
            rows = await uow.store.per_blueprint_state()
        gauge.clear()
        for blueprint_id, state, count in rows:
            gauge.labels(blueprint_id or "none", state).set(count)

    return update


async def on_start(ctx: ServiceContext) -> None:
    settings = _settings(ctx)
    if settings.declarations_url:
        ctx.spawn(bootstrap(settings, ctx.uow, ctx.clock), name="compliance-bootstrap")
    ctx.spawn(every(settings.sweep_interval_seconds, "sweep", lambda: sweep_all(ctx)), "sweep")
    ctx.spawn(
        every(settings.snapshot_interval_seconds, "snapshot", lambda: snapshot(ctx)), "snapshot"
    )
    ctx.spawn(every(settings.metrics_interval_seconds, "gauges", _gauge_updater(ctx)), "gauges")


SPEC = ServiceSpec(
    name="compliance",
    title="Managed OS — compliance",
    description="Who is up to date, pending, in progress, overdue, failing or incompatible, "
    "from the Macs' own DDM status.",
    settings_cls=ComplianceSettings,
    metadata=models.metadata,
    outbox_table=models.outbox,
    inbox_table=models.processed_events,
    uow_cls=ComplianceUnitOfWork,
    migrations="compliance:migrations",
    routers=[router],
    publishes=[TOPIC_COMPLIANCE],
    consumers=consumers,
    on_start=on_start,
)
