"""What the benchmarks share: a fresh, migrated PostgreSQL database per measurement, and
services started as served (`managed-os serve`) in their own processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from managed_os.db import make_engine
from managed_os.migrations import upgrade
from managed_os.service import ServiceSpec

PG = os.environ.get("MOS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@asynccontextmanager
async def fresh_database(spec: ServiceSpec) -> AsyncIterator[AsyncEngine]:
    """An engine on a new database with `spec`'s migrations applied; dropped afterwards."""
    name = f"mos_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = PG.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + f"/{name}"
    engine = make_engine(url)
    try:
        await upgrade(spec, engine)
        yield engine
    finally:
        await engine.dispose()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


@dataclass
class Server:
    name: str
    port: int
    proc: asyncio.subprocess.Process


async def start(name: str, port: int, argv: list[str], env: dict[str, str]) -> Server:
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    async with httpx.AsyncClient(timeout=2) as http:
        for _ in range(300):
            if proc.returncode is not None:
                err = await proc.stderr.read() if proc.stderr else b""
                raise SystemExit(f"{name} exited: {err.decode()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"http://127.0.0.1:{port}/openapi.json")).status_code == 200:
                    return Server(name, port, proc)
            await asyncio.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{name} did not start")


async def stop(server: Server) -> None:
    if server.proc.returncode is None:
        server.proc.terminate()
        try:
            await asyncio.wait_for(server.proc.wait(), 30)
        except TimeoutError:
            server.proc.kill()
            await server.proc.wait()
