"""The catalog service's spec: tables, routes, events, background sync."""

from __future__ import annotations

from typing import cast

from catalog import models
from catalog.feeds.fetch import Fetcher
from catalog.repository import CatalogUnitOfWork
from catalog.router import router
from catalog.service import fetcher_for, run_due_syncs
from catalog.settings import CatalogSettings
from managed_os.events import TOPIC_RELEASES
from managed_os.service import ServiceContext, ServiceSpec
from managed_os.tasks import every


async def _scheduler(ctx: ServiceContext) -> None:
    """Every tick, sync the sources that are due. The due time lives in the database and is
    claimed atomically, so with several replicas each scheduled sync runs once."""
    settings = cast(CatalogSettings, ctx.settings)
    fetcher: Fetcher = ctx.extras["fetcher"]
    # A feed failure is recorded on its source; what `every` logs is e.g. the database.
    await every(
        settings.scheduler_tick_seconds,
        "scheduled catalog sync",
        lambda: run_due_syncs(ctx.uow, fetcher, settings, ctx.clock.now()),
    )


async def on_start(ctx: ServiceContext) -> None:
    ctx.extras["fetcher"] = fetcher_for(cast(CatalogSettings, ctx.settings))
    if cast(CatalogSettings, ctx.settings).sync_on_start:
        ctx.spawn(_scheduler(ctx), name="catalog-sync")


async def on_stop(ctx: ServiceContext) -> None:
    await ctx.extras["fetcher"].aclose()


SPEC = ServiceSpec(
    name="catalog",
    title="Managed OS — catalog",
    description="Every macOS and Background Security Improvement release Apple ships.",
    settings_cls=CatalogSettings,
    metadata=models.metadata,
    outbox_table=models.outbox,
    inbox_table=models.processed_events,
    uow_cls=CatalogUnitOfWork,
    migrations="catalog:migrations",
    routers=[router],
    publishes=[TOPIC_RELEASES],
    on_start=on_start,
    on_stop=on_stop,
)
