"""What a service declares about itself, and the runtime context it gets at startup."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, FastAPI
from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import MetaData, Table
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp

from managed_os.bus.protocol import EventBus, Subscription
from managed_os.clock import Clock
from managed_os.cloudevents import CloudEvent
from managed_os.http import HttpMetrics
from managed_os.outbox import OutboxRelay
from managed_os.settings import ServiceSettings


@dataclass(frozen=True)
class ConsumerSpec:
    """One consumer group: `apply(uow, event)` runs inside an idempotent transaction, one
    event at a time; or `apply_batch(events)` gets whole fetched batches and is itself
    responsible for applying each batch in one idempotent transaction (see
    `managed_os.inbox.SqlInboxStore.record_many`)."""

    group: str
    topics: Sequence[str]
    apply: Callable[[Any, CloudEvent], Awaitable[None]] | None = None
    apply_batch: Callable[[Sequence[CloudEvent]], Awaitable[None]] | None = None
    max_batch: int = 1000
    members: int = 1  # group members in this process (batched consumers on a partitioned bus)


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # "catalog", "declarations", "device-channel", "compliance"
    title: str
    settings_cls: type[ServiceSettings]
    metadata: MetaData
    outbox_table: Table
    inbox_table: Table
    uow_cls: type[Any]
    migrations: str  # Alembic script location, e.g. "catalog:migrations"
    routers: Sequence[APIRouter]
    publishes: Sequence[str] = ()
    consumers: Callable[[ServiceContext], Sequence[ConsumerSpec]] = lambda _ctx: ()
    on_start: Callable[[ServiceContext], Awaitable[None]] | None = None
    on_stop: Callable[[ServiceContext], Awaitable[None]] | None = None
    # Service-specific app setup (extra middleware), run once when the app is built.
    configure: Callable[[FastAPI, ServiceSettings], None] | None = None
    # An ASGI layer in front of the whole app (`app.ServiceApp`), given the app (whose `full`
    # answers anything it does not), the settings and the request metrics it must record.
    front: Callable[[Any, ServiceSettings, HttpMetrics], ASGIApp] | None = None
    # Per-service in-memory state (caches), built with the context at startup, before any
    # consumer or request; every unit of work gets it as `state=`.
    make_state: Callable[[ServiceContext], Any] | None = None
    description: str = ""


@dataclass
class Metrics:
    registry: CollectorRegistry
    outbox_published: Counter
    outbox_backlog: Gauge
    consumer_lag: Gauge
    service: str

    @classmethod
    def create(cls, service: str) -> Metrics:
        registry = CollectorRegistry()
        published = Counter(
            "mos_outbox_published_total", "Events relayed", ["service"], registry=registry
        )
        backlog = Gauge(
            "mos_outbox_backlog", "Events awaiting relay", ["service"], registry=registry
        )
        lag = Gauge(
            "mos_consumer_lag",
            "Events behind the end of a consumed partition (Kafka)",
            ["service", "group", "topic", "partition"],
            registry=registry,
        )
        return cls(registry, published.labels(service), backlog.labels(service), lag, service)

    def report_lag(self, group: str, topic: str, partition: int, lag: int) -> None:
        self.consumer_lag.labels(self.service, group, topic, str(partition)).set(lag)


@dataclass
class ServiceContext:
    """Everything a request handler or consumer may reach; one per running service."""

    spec: ServiceSpec
    settings: ServiceSettings
    engine: AsyncEngine
    bus: EventBus
    clock: Clock
    metrics: Metrics
    relay: OutboxRelay | None = None
    subscriptions: list[Subscription] = field(default_factory=list)
    background: list[asyncio.Task[Any]] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    state: Any = None

    def __post_init__(self) -> None:
        if self.spec.make_state is not None:
            self.state = self.spec.make_state(self)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """Run a service's background loop (scheduler, push worker, bootstrap); the app
        factory stops every one of them at shutdown, before `on_stop`."""
        self.background.append(asyncio.create_task(coro, name=name))

    def uow(self) -> Any:
        """A new unit of work; committing it wakes the outbox relay."""
        extra = {} if self.state is None else {"state": self.state}
        return self.spec.uow_cls(
            self.engine,
            self.spec.outbox_table,
            self.spec.inbox_table,
            on_commit=self.wake_relay,
            **extra,
        )

    def wake_relay(self) -> None:
        """Publish what was just committed to the outbox now, not at the next poll."""
        if self.relay is not None:
            self.relay.notify()
