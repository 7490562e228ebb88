"""`managed-os`: run the embedded suite, serve one service, migrate, issue tokens."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
from pydantic import ValidationError

from managed_os import auth
from managed_os.logs import configure_logging
from managed_os.settings import ConfigurationError
from managed_os.suite import SPECS, SignalFreeServer, embedded_settings, load_spec, running_suite

# How long in-flight requests get to finish after SIGTERM before they are cancelled; the
# lifespan's shutdown (outbox flush, consumers leaving their groups) follows.
DRAIN_SECONDS = 20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="managed-os", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="all four services in one process, embedded storage")
    run.add_argument("--data-dir", type=Path, default=Path("data"))
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--base-port", type=int, default=8081, help="catalog's port; others follow")

    serve = sub.add_parser("serve", help="one service, configured by its MOS_<SERVICE>_* env")
    serve.add_argument("service", choices=list(SPECS))

    migrate = sub.add_parser("migrate", help="apply migrations (MOS_<SERVICE>_DATABASE_URL)")
    migrate.add_argument("services", nargs="*", help=f"any of {', '.join(SPECS)} (default: all)")

    sim = sub.add_parser("simulate", help="a fleet of simulated Macs speaking DDM over HTTP")
    sim.add_argument("--catalog", default="http://127.0.0.1:8081")
    sim.add_argument("--device-channel", default="http://127.0.0.1:8083")
    sim.add_argument(
        "--token", required=True, help="bearer token (catalog:read, device-channel:write)"
    )
    sim.add_argument("--blueprint", help="blueprint id to enrol the Macs on")
    sim.add_argument("--devices", type=int, default=100)
    sim.add_argument("--major", type=int, default=26)
    sim.add_argument("--ticks", type=int, default=10, help="simulated hours to run")
    sim.add_argument("--tick-seconds", type=float, default=1.0, help="real seconds per tick")
    sim.add_argument("--failure-rate", type=float, default=0.0)
    sim.add_argument("--hmac-key", default="")
    sim.add_argument(
        "--checkin-share",
        type=float,
        default=0.5,
        help="share of Macs using whole check-ins instead of /ddm/ routes",
    )
    sim.add_argument("--prefix", default="SIM", help="enrollment ids are <prefix>-00000, …")

    token = sub.add_parser("token", help="issue an API token signed with MOS_AUTH_SECRET")
    token.add_argument("--scope", action="append", default=[], help="e.g. catalog:read; repeat")
    token.add_argument("--all", action="store_true", help="every scope of every service")
    token.add_argument("--subject", default="admin")

    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return serve_process(_run(args.data_dir, args.host, args.base_port))
        if args.command == "serve":
            return _serve(args.service)
        if args.command == "simulate":
            from simulator.run import SimulateArgs, simulate

            fields = {k: v for k, v in vars(args).items() if k != "command"}
            asyncio.run(simulate(SimulateArgs(**fields)))
            return 0
        if args.command == "migrate":
            return asyncio.run(_migrate(args.services or list(SPECS)))
        return _token(args.scope, args.all, args.subject)
    except (ValidationError, ConfigurationError) as exc:
        print(f"configuration error:\n{exc}", file=sys.stderr)
        return 2


async def _run(data_dir: Path, host: str, base_port: int) -> int:
    from managed_os.bus.inprocess import InProcessBus

    ports = {name: base_port + i for i, name in enumerate(SPECS)}
    settings = embedded_settings(data_dir, host, ports)
    configure_logging(settings["catalog"].log_level)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running_suite(settings, shared_bus=InProcessBus()) as suite:
        secret = settings["catalog"].auth_secret.get_secret_value()
        admin = auth.issue_token(secret, auth.ALL_SCOPES, subject="embedded-admin")
        print(f"Managed OS is running (embedded: SQLite under {data_dir}, in-process bus)")
        for name, url in suite.urls.items():
            print(f"  {name:<15} {url}   (docs: {url}/docs)")
        print(f"\nAdmin token (all scopes):\n  {admin}\n", flush=True)
        await stop.wait()
    return 0


def _serve(name: str) -> int:
    from managed_os.app import create_app

    spec = load_spec(name)
    settings = spec.settings_cls()
    configure_logging(settings.log_level)
    app = create_app(spec, settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=DRAIN_SECONDS,
    )
    serve_process(_serve_until_signalled(SignalFreeServer(config)))
    return 0


# The collector in a serving process. CPython collects the young generation every 700 net
# container allocations (objects created and not yet freed). A serving process allocates a few
# hundred per request, and a consumer batch keeps its events' objects alive until it commits:
# each collection walks every object still held, all live, nothing to free. At 20,000 the
# collector took 6.9 us of a compliance event's ~90 us; the threshold went to 100,000 (also
# `bench/ddm_sync.py`'s status load: GC time 0.65 -> 0.17 s over a run). Batches of 5,000
# events, three group members a process, outgrew that too: a served compliance process spent
# 0.6-1.1 s in 14-16 young collections over the benchmark's 100,000-event updates stream (timed
# with `gc.callbacks`), 15-20 us an event across the two processes.
# So collections now come with time, every ten seconds, in the event loop (where the automatic
# ones ran, with the finalizers of what they free): the young generation each time, the middle
# one every twentieth time and all of them every twentieth of those (about an hour), the turns
# CPython's own thresholds give; the young allocation count is only a backstop, out of a
# batch's reach. The same run: one collection a process, 0.18-0.20 s. A garbage cycle waits
# about ten seconds, or until its generation's turn if it lived through a collection first (a
# compliance batch leaves about one cycle object per ten events); an idle process, which used
# to reach no threshold, now collects too. Once a second cost as much as the old threshold
# (12-13 collections, 0.8 s): each one walks the batches in flight, so the cost follows the
# count of collections.
GC_THRESHOLDS = (1_000_000, 20, 20)
COLLECTION_SECONDS = 10.0

T = TypeVar("T")


def serve_process(main: Coroutine[Any, Any, T]) -> T:
    """Run a serving process (`serve`, `run`) to its end, with its collector tuned and
    collecting by time (see above); tests and tools keep CPython's defaults."""
    gc.set_threshold(*GC_THRESHOLDS)

    async def collecting() -> T:
        collect_regularly()
        return await main

    return asyncio.run(collecting())


def collect_regularly(seconds: float = COLLECTION_SECONDS) -> None:
    """Every `seconds`, in the running loop, collect the generations whose turn has come: the
    young one each time; the middle one too once the young one has been collected as many
    times as its threshold since the middle one last was; all of them once the middle one
    has been, likewise. CPython counts an explicit collection as it counts its own."""
    loop = asyncio.get_running_loop()

    def collect() -> None:
        try:
            _, middle, oldest = gc.get_threshold()
            _, young_runs, middle_runs = gc.get_count()
            gc.collect(2 if middle_runs >= oldest else 1 if young_runs >= middle else 0)
        finally:
            loop.call_later(seconds, collect)

    loop.call_later(seconds, collect)


async def _serve_until_signalled(server: uvicorn.Server) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully: stop accepting, let in-flight
    requests finish (up to `DRAIN_SECONDS`), then the lifespan flushes the outbox and commits
    consumer offsets. A second SIGINT skips the lifespan's shutdown. A graceful stop returns
    normally, so the process exits 0 (uvicorn would re-raise the signal and die by it)."""
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if server.should_exit and sig == signal.SIGINT:
            server.force_exit = True
        server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    await server.serve()


async def _migrate(names: list[str]) -> int:
    from managed_os.db import make_engine
    from managed_os.migrations import current, upgrade

    configure_logging()
    for name in names:
        spec = load_spec(name)
        settings = spec.settings_cls()
        engine = make_engine(settings.database_url)
        try:
            await upgrade(spec, engine)
            print(f"{name}: at revision {await current(spec, engine)}")
        finally:
            await engine.dispose()
    return 0


def _token(scopes: list[str], all_scopes: bool, subject: str) -> int:
    secret = os.environ.get("MOS_AUTH_SECRET", "")
    chosen = list(auth.ALL_SCOPES) if all_scopes else scopes
    unknown = [s for s in chosen if s not in auth.ALL_SCOPES]
    if not chosen or unknown:
        print(f"give --all or --scope from: {' '.join(auth.ALL_SCOPES)}", file=sys.stderr)
        return 2
    if not secret:
        print("set MOS_AUTH_SECRET to the services' auth secret", file=sys.stderr)
        return 2
    print(auth.issue_token(secret, chosen, subject=subject))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
