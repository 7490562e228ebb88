"""The device-channel service's spec."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import cast

from fastapi import FastAPI
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import ValidationError

from device_channel import models, push, service
from device_channel.bootstrap import bootstrap
from device_channel.ddm_router import router as ddm_router
from device_channel.fast_path import DeviceFront
from device_channel.hmac import SignResponses
from device_channel.listener import keep_cache
from device_channel.repository import DeviceChannelUnitOfWork, StatusBatchStore
from device_channel.router import router
from device_channel.settings import DeviceChannelSettings
from device_channel.state import DeviceChannelState
from device_channel.status_writer import AlreadyCommitted, StatusWriter
from device_channel.sync_cache import Key, SyncCache
from managed_os import ddm
from managed_os.app import ServiceApp
from managed_os.cloudevents import CloudEvent, EnvelopeError
from managed_os.db import check_fits, is_postgres
from managed_os.events import TOPIC_DEVICES, TOPIC_POLICIES, PolicyPublished, from_event
from managed_os.http import HttpMetrics
from managed_os.policy import Policy
from managed_os.service import ConsumerSpec, ServiceContext, ServiceSpec
from managed_os.settings import ServiceSettings
from managed_os.versions import VersionError, parse_version

log = logging.getLogger(__name__)


def front(app: ServiceApp, settings: ServiceSettings, metrics: HttpMetrics) -> DeviceFront:
    key = cast(DeviceChannelSettings, settings).hmac_key.get_secret_value().encode()
    return DeviceFront(app, key, settings.max_body_bytes, metrics)


def consumers(ctx: ServiceContext) -> list[ConsumerSpec]:
    async def on_policy(uow: DeviceChannelUnitOfWork, event: CloudEvent) -> None:
        payload = from_event(event)
        if isinstance(payload, PolicyPublished):
            check_policy(payload)
            policy = Policy(
                blueprint_id=payload.blueprint_id,
                revision=payload.revision,
                token=payload.token,
                candidates=payload.candidates,
            )
            await service.on_policy(uow, policy, ctx.clock.now())

    return [ConsumerSpec(group="policies", topics=[TOPIC_POLICIES], apply=on_policy)]


def check_policy(payload: PolicyPublished) -> None:
    """Raises `EnvelopeError` (the event is skipped) for a policy this service could never
    store or serve: a blueprint id or token longer than its column, a revision beyond an
    integer, a candidate that is not a declaration or whose rule names a version that does
    not parse (every manifest of the blueprint's Macs would fail to build). Such an event,
    retried, would stop the partition behind it."""
    policies = models.policies.c
    check_fits(
        [
            (policies.blueprint_id, payload.blueprint_id),
            (policies.token, payload.token),
            (policies.revision, payload.revision),
        ]
    )
    for candidate in payload.candidates:
        try:
            ddm.Declaration.model_validate(candidate.declaration)
            for bound in (candidate.applies.version_below, candidate.applies.version_at_least):
                if bound is not None:
                    parse_version(bound)
        except (ValidationError, VersionError) as exc:
            raise EnvelopeError(f"policy candidate cannot be served: {exc}") from exc


def configure(app: FastAPI, settings: ServiceSettings) -> None:
    key = cast(DeviceChannelSettings, settings).hmac_key.get_secret_value().encode()
    if key:
        app.add_middleware(SignResponses, key=key)


class StateMetrics(Collector):
    """Read at scrape time, so the request path only bumps integers."""

    def __init__(self, state: DeviceChannelState) -> None:
        self.cache, self.writer = state.cache, state.status_writer

    def collect(self) -> Iterator[Metric]:
        size = GaugeMetricFamily(
            "mos_device_channel_sync_cache_devices", "Devices held in the sync cache"
        )
        size.add_metric([], len(self.cache))
        lookups = CounterMetricFamily(
            "mos_device_channel_sync_cache_lookups", "Sync cache lookups", labels=["result"]
        )
        lookups.add_metric(["hit"], self.cache.hits)
        lookups.add_metric(["miss"], self.cache.misses)
        yield size
        yield lookups
        if self.writer is not None:
            reports = CounterMetricFamily(
                "mos_device_channel_status_reports_committed",
                "Status reports committed",
            )
            reports.add_metric([], self.writer.reports)
            transactions = CounterMetricFamily(
                "mos_device_channel_status_transactions",
                "Transactions that committed status reports (several share one under load)",
            )
            transactions.add_metric([], self.writer.transactions)
            yield reports
            yield transactions


def make_state(ctx: ServiceContext) -> DeviceChannelState:
    settings = cast(DeviceChannelSettings, ctx.settings)

    async def apply(items: Sequence[tuple[str, ddm.StatusReport]]) -> None:
        uow: DeviceChannelUnitOfWork
        committed = False
        try:
            async with ctx.uow() as uow:
                await service.ingest_statuses(uow, items, ctx.clock.now())
                await uow.commit()
                committed = True
        except Exception as exc:
            if committed:  # failed after the commit (closing): applied; must not run again
                raise AlreadyCommitted(exc) from exc
            raise

    async def apply_unlocked(items: Sequence[tuple[str, ddm.StatusReport]]) -> set[str]:
        stored: set[str] = set()
        changed: set[Key] = set()
        try:
            async with ctx.engine.connect() as conn:
                store = await StatusBatchStore.of(conn)
                await service.ingest_statuses_unlocked(
                    store, state, items, ctx.clock.now(), stored, changed
                )
        except Exception as exc:
            if not stored:
                raise
            log.warning("status write failed after storing some", extra={"error": repr(exc)})
        finally:
            state.cache.invalidate(sorted(changed))
            if stored:
                ctx.wake_relay()
        return stored

    state = DeviceChannelState(
        cache=SyncCache(settings.sync_cache_size),
        status_writer=StatusWriter(
            apply,
            unlocked=apply_unlocked if is_postgres(ctx.engine) else None,
            batch_size=settings.status_batch_size,
        ),
    )
    ctx.metrics.registry.register(StateMetrics(state))
    return state


async def on_start(ctx: ServiceContext) -> None:
    settings = cast(DeviceChannelSettings, ctx.settings)
    state = cast(DeviceChannelState, ctx.state)
    ctx.spawn(
        keep_cache(state.cache, ctx.engine, warm=settings.sync_cache_warm),
        name="device-channel-sync-cache",
    )
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
    routers=[ddm_router, router],  # the routes Macs poll are matched first
    publishes=[TOPIC_DEVICES],
    consumers=consumers,
    configure=configure,
    front=front,
    on_start=on_start,
    on_stop=on_stop,
    make_state=make_state,
)
