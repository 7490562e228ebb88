"""Run several services in one process (the embedded `managed-os run`, and the e2e tests)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import secrets
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from managed_os.app import create_app
from managed_os.bus.protocol import EventBus
from managed_os.clock import Clock
from managed_os.service import ServiceSpec
from managed_os.settings import ServiceSettings
from managed_os.tasks import stop_task

SPECS = {
    "catalog": "catalog.main:SPEC",
    "declarations": "declarations.main:SPEC",
    "device-channel": "device_channel.main:SPEC",
    "compliance": "compliance.main:SPEC",
}


def load_spec(name: str) -> ServiceSpec:
    if name not in SPECS:
        raise KeyError(f"unknown service {name!r}; expected one of {', '.join(SPECS)}")
    module, _, attr = SPECS[name].partition(":")
    spec: ServiceSpec = getattr(importlib.import_module(module), attr)
    return spec


def auth_secret(data_dir: Path) -> str:
    """The embedded suite's token-signing key, generated once and kept in the data directory."""
    path = data_dir / "auth-secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def embedded_settings(
    data_dir: Path, host: str, ports: Mapping[str, int], overrides: Mapping[str, Any] | None = None
) -> dict[str, ServiceSettings]:
    """Each service's settings from its environment, then pinned to the embedded default:
    SQLite files under `data_dir`, the in-process bus, migrations at startup."""
    secret = auth_secret(data_dir)
    result: dict[str, ServiceSettings] = {}
    for name in SPECS:
        spec = load_spec(name)
        values: dict[str, Any] = {
            "host": host,
            "port": ports[name],
            "database_url": f"sqlite+aiosqlite:///{(data_dir / f'{name}.db').resolve()}",
            "bus": "inprocess",
            "auto_migrate": True,
            "auth_secret": secret,
        }
        if name == "device-channel":
            values["allow_unsigned"] = True
        if name == "declarations":
            values["catalog_url"] = f"http://{host}:{ports['catalog']}"
        if name in ("device-channel", "compliance"):
            values["declarations_url"] = f"http://{host}:{ports['declarations']}"
        values.update((overrides or {}).get(name, {}))
        result[name] = spec.settings_cls(**values)
    return result


# How often a drain looks for connections accepted as it began, and how long such a connection
# may go without a request before it is closed (see `SignalFreeServer`).
LATE_CONNECTION_CHECK_SECONDS = 0.02
LATE_CONNECTION_GRACE_SECONDS = 0.5


class SignalFreeServer(uvicorn.Server):
    """Leaves signals to the caller: one process may run several servers, and uvicorn's own
    handling re-raises the signal after a graceful stop, so the process would die by it.

    Its drain also ends the connections uvicorn does not know yet when it begins: one accepted
    just before the listening socket closed is known a loop turn later (asyncio calls
    `connection_made` then), so uvicorn never told it to close. Kept alive, a client that
    sends again as soon as it is answered (a Mac reporting) held the drain open until its
    timeout, which then cancelled the request in flight: a 500. Such a connection is told to
    close after its answer once a request is under way; one that sends nothing within the
    grace is closed (its first request may still be unread in the socket when it appears, and
    closing it then would reset a request the client has already sent)."""

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        told = set(self.server_state.connections)  # what uvicorn's shutdown tells at once
        late = asyncio.create_task(self._close_late_connections(told))
        try:
            await super().shutdown(sockets)
        finally:
            await stop_task(late)

    async def _close_late_connections(self, told: set[Any]) -> None:
        loop = asyncio.get_running_loop()
        appeared: dict[Any, float] = {}
        while True:
            now = loop.time()
            for connection in self.server_state.connections - told:
                cycle = getattr(connection, "cycle", None)  # uvicorn's request in progress
                busy = cycle is not None and not cycle.response_complete
                since = appeared.setdefault(connection, now)
                if busy or now - since >= LATE_CONNECTION_GRACE_SECONDS:
                    connection.shutdown()  # after its answer if busy, else closed now
                    told.add(connection)
            await asyncio.sleep(LATE_CONNECTION_CHECK_SECONDS)


@dataclass
class RunningSuite:
    urls: dict[str, str]
    settings: Mapping[str, ServiceSettings]
    servers: dict[str, uvicorn.Server]
    bus: EventBus | None


@contextlib.asynccontextmanager
async def running_suite(
    settings: Mapping[str, ServiceSettings],
    *,
    shared_bus: EventBus | None = None,
    clock: Clock | None = None,
) -> AsyncIterator[RunningSuite]:
    """Start one uvicorn server per service on its settings' host and port; stop them all on
    exit (each finishes in-flight requests, flushes its outbox and commits its offsets)."""
    if shared_bus is not None:
        await shared_bus.start()
    servers: dict[str, uvicorn.Server] = {}
    tasks: list[asyncio.Task[None]] = []
    try:
        for name, s in settings.items():
            app = create_app(load_spec(name), s, bus=shared_bus, clock=clock)
            config = uvicorn.Config(
                app,
                host=s.host,
                port=s.port,
                log_config=None,
                lifespan="on",
                timeout_graceful_shutdown=10,
            )
            server = SignalFreeServer(config)
            servers[name] = server
            tasks.append(asyncio.create_task(server.serve(), name=f"serve-{name}"))
        while not all(s.started for s in servers.values()):
            failed = [t for t in tasks if t.done()]
            if failed:
                failed[0].result()
                raise RuntimeError("a service exited during startup")
            await asyncio.sleep(0.05)
        urls = {n: f"http://{s.host}:{s.port}" for n, s in settings.items()}
        yield RunningSuite(urls, settings, servers, shared_bus)
    finally:
        for running in servers.values():
            running.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        if shared_bus is not None:
            await shared_bus.stop()
