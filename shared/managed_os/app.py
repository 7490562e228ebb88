"""The app factory: every service gets the same health, readiness, metrics, error shape,
body limit, auth and lifecycle (engine, migrations, bus, outbox relay, consumers)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from managed_os import auth
from managed_os.bus.inprocess import InProcessBus
from managed_os.bus.kafka import KafkaBus
from managed_os.bus.protocol import EventBus, EventHandler
from managed_os.clock import Clock, SystemClock
from managed_os.cloudevents import CloudEvent, EnvelopeError
from managed_os.db import make_engine
from managed_os.errors import DomainError, Unauthorized, error_body, status_for
from managed_os.http import BodyLimit, HttpMetrics, RequestMetrics
from managed_os.inbox import idempotent
from managed_os.migrations import upgrade
from managed_os.outbox import OutboxRelay
from managed_os.service import Metrics, ServiceContext, ServiceSpec
from managed_os.settings import ServiceSettings
from managed_os.tasks import stop_task

log = logging.getLogger(__name__)


def build_bus(
    settings: ServiceSettings, spec: ServiceSpec, metrics: Metrics | None = None
) -> EventBus:
    if settings.bus == "kafka":
        return KafkaBus(
            settings.kafka_bootstrap_servers,
            client_id=f"managed-os-{spec.name}",
            topics=sorted(spec.publishes),
            partitions=settings.kafka_topic_partitions,
            replication_factor=settings.kafka_replication_factor,
            on_lag=metrics.report_lag if metrics is not None else None,
        )
    return InProcessBus()


def create_app(
    spec: ServiceSpec,
    settings: ServiceSettings,
    *,
    bus: EventBus | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    """Build the FastAPI app of one service. A `bus` passed in is shared and not owned:
    the caller starts and stops it (the embedded `managed-os run`)."""
    settings.check_serving()
    owns_bus = bus is None
    metrics = Metrics.create(spec.name)
    the_bus = bus if bus is not None else build_bus(settings, spec, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        if settings.auto_migrate:
            await upgrade(spec, engine)
        ctx = ServiceContext(spec, settings, engine, the_bus, clock or SystemClock(), metrics)
        app.state.ctx = ctx
        if owns_bus:
            await the_bus.start()
        ctx.relay = OutboxRelay(
            ctx.uow,
            the_bus,
            interval=settings.outbox_poll_interval,
            batch=settings.outbox_batch_size,
            on_published=metrics.outbox_published.inc,
            on_backlog=metrics.outbox_backlog.set,
        )
        if spec.publishes:
            ctx.relay.start()
        for consumer in spec.consumers(ctx):
            group = f"{spec.name}.{consumer.group}"
            if consumer.apply_batch is not None:
                sub = await the_bus.subscribe_batch(
                    consumer.topics,
                    group,
                    consumer.apply_batch,
                    consumer.max_batch,
                    consumer.members,
                )
            else:
                assert consumer.apply is not None
                handler = skip_unreadable(idempotent(group, ctx.uow, consumer.apply), group)
                sub = await the_bus.subscribe(consumer.topics, group, handler)
            ctx.subscriptions.append(sub)
        if spec.on_start is not None:
            await spec.on_start(ctx)
        log.info("service started", extra={"service": spec.name, "port": settings.port})
        try:
            yield
        finally:
            for task in ctx.background:
                await stop_task(task)
            if spec.on_stop is not None:
                await spec.on_stop(ctx)
            for sub in ctx.subscriptions:
                await sub.stop()
            await ctx.relay.stop()
            await ctx.relay.flush()
            if owns_bus:
                await the_bus.stop()
            await engine.dispose()
            log.info("service stopped", extra={"service": spec.name})

    app = ServiceApp(
        title=spec.title, description=spec.description, version="0.1.0", lifespan=lifespan
    )
    http_metrics = HttpMetrics(spec.name, metrics.registry)
    _install_error_handlers(app)
    _install_probes(app, spec, metrics)
    for router in spec.routers:
        app.include_router(router)
    if spec.configure is not None:
        spec.configure(app, settings)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=http_metrics)
    if spec.front is not None:
        app.front = spec.front(app, settings, http_metrics)
    return app


class ServiceApp(FastAPI):
    """A service's app, with an optional `front` (`ServiceSpec.front`): an ASGI layer that
    sees every HTTP request before any of FastAPI's own handling, for the few a service answers
    most (the device channel's DDM syncs and status reports), and hands the rest to `full`."""

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.front is not None and scope["type"] == "http":
            await self.front(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def full(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The complete app: middleware, routing, error handlers."""
        await super().__call__(scope, receive, send)


def skip_unreadable(handler: EventHandler, group: str) -> EventHandler:
    """An event that breaks its contract can never succeed: log it and move on rather than
    wedge the partition (its transaction rolled back, so nothing of it was applied)."""

    async def handle(event: CloudEvent) -> None:
        try:
            await handler(event)
        except EnvelopeError as exc:
            log.error("skipping unreadable event", extra={"group": group, "error": str(exc)})

    return handle


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(_request: Request, exc: DomainError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if status_for(exc) == 401 else None
        return JSONResponse(
            error_body(exc.code, exc.message, exc.details), status_for(exc), headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        if any(e["type"] == "json_invalid" for e in errors):
            return JSONResponse(
                error_body("malformed", "request body is not valid JSON", errors), 400
            )
        return JSONResponse(error_body("invalid", "request failed validation", errors), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code)

    @app.exception_handler(IntegrityError)
    async def integrity_error(_request: Request, exc: IntegrityError) -> JSONResponse:
        # Two writers raced for the same unique row: the client may retry.
        log.warning("integrity conflict", extra={"error": str(exc.orig)})
        return JSONResponse(
            error_body("conflict", "a concurrent change conflicted with this one; retry"), 409
        )

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse(error_body("internal", "internal server error"), 500)


def _install_probes(app: FastAPI, spec: ServiceSpec, metrics: Metrics) -> None:
    @app.get("/healthz", tags=["ops"], summary="Liveness: the process is serving")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": spec.name}

    @app.get("/readyz", tags=["ops"], summary="Readiness: database and bus reachable")
    async def readyz(request: Request) -> JSONResponse:
        ctx: ServiceContext = request.app.state.ctx
        checks = {"database": await _db_ok(ctx), "bus": await ctx.bus.ping()}
        ok = all(checks.values())
        body = {"status": "ready" if ok else "not_ready", "checks": checks}
        return JSONResponse(body, 200 if ok else 503)

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def _db_ok(ctx: ServiceContext) -> bool:
    try:
        async with asyncio.timeout(3), ctx.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


# ---- dependencies for routers -------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False)


async def get_ctx(request: Request) -> ServiceContext:
    # async on purpose: FastAPI runs a plain-def dependency in its thread pool, a hop every
    # request would pay.
    return request.app.state.ctx


Ctx = Annotated[ServiceContext, Depends(get_ctx)]


def scope(needed: str) -> Any:
    """Dependency requiring a bearer token carrying `needed` (e.g. `catalog:write`)."""

    async def check(
        ctx: Ctx,
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> frozenset[str]:
        if creds is None:
            raise Unauthorized("missing bearer token")
        scopes = auth.verify_token(ctx.settings.auth_secret.get_secret_value(), creds.credentials)
        auth.require(scopes, needed)
        return scopes

    return Depends(check)
