"""The catalog service's spec: tables, routes, events, background sync."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from catalog import models
from catalog.repository import CatalogUnitOfWork
from catalog.router import router
from catalog.service import sync_gdmf
from catalog.settings import CatalogSettings
from managed_os.events import TOPIC_RELEASES
from managed_os.service import ServiceContext, ServiceSpec

log = logging.getLogger(__name__)


async def _sync_loop(ctx: ServiceContext) -> None:
    settings: CatalogSettings = ctx.settings  # type: ignore[assignment]
    first = True
    while True:
        if not first or settings.sync_on_start:
            try:
                await sync_gdmf(
                    ctx.uow(), settings.gdmf_url, ctx.clock.now(), settings.fetch_timeout_seconds
                )
            except Exception:  # a feed failure is recorded by sync_gdmf; this is e.g. the DB
                log.exception("scheduled catalog sync failed")
        first = False
        await asyncio.sleep(settings.sync_interval_seconds)


async def on_start(ctx: ServiceContext) -> None:
    ctx.extras["sync_task"] = asyncio.create_task(_sync_loop(ctx), name="catalog-sync")


async def on_stop(ctx: ServiceContext) -> None:
    task = ctx.extras.get("sync_task")
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


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
