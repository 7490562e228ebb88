"""The declarations service's spec."""

from __future__ import annotations

from typing import cast

from declarations import models, service
from declarations.bootstrap import bootstrap
from declarations.repository import DeclarationsUnitOfWork
from declarations.router import router
from declarations.settings import DeclarationsSettings
from managed_os.cloudevents import CloudEvent, EnvelopeError
from managed_os.db import check_fits
from managed_os.events import (
    TOPIC_POLICIES,
    TOPIC_RELEASES,
    ReleaseData,
    ReleasePublished,
    ReleaseUpdated,
    from_event,
)
from managed_os.service import ConsumerSpec, ServiceContext, ServiceSpec
from managed_os.versions import VersionError, parse_version


def consumers(ctx: ServiceContext) -> list[ConsumerSpec]:
    async def on_release(uow: DeclarationsUnitOfWork, event: CloudEvent) -> None:
        payload = from_event(event)
        if isinstance(payload, ReleasePublished | ReleaseUpdated):
            check_release(payload.release)
            await service.on_release(uow, payload.release, ctx.clock.now())

    return [ConsumerSpec(group="releases", topics=[TOPIC_RELEASES], apply=on_release)]


def check_release(release: ReleaseData) -> None:
    """Raises `EnvelopeError` (the event is skipped) for a release this service could never
    store or compile against: a version, BSI letter or build longer than its column, a major
    beyond an integer, a version that does not parse (every compile of its major would
    fail). Such an event, retried, would stop the partition behind it."""
    releases = models.known_releases.c
    check_fits(
        [
            (releases.version, release.version),
            (releases.extra, release.extra),
            (releases.build, release.build),
            (releases.major, release.major),
        ]
    )
    try:
        parse_version(release.version)
    except VersionError as exc:
        raise EnvelopeError(f"release version {release.version!r}: {exc}") from exc


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
