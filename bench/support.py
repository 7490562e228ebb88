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


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User and system CPU each process of `pids` (all its threads) has used so far, from
    `/proc` (Linux); a process that has exited is left out."""
    used = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two `cpu_seconds` readings (a process started in between
    counts whole; one that exited in between is missed, as a short-lived autovacuum worker
    would be: a small undercount)."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def postgres_pids() -> list[int]:
    """Every PostgreSQL server process on this machine (the bench database's backends among
    them, and the WAL writer, checkpointer and autovacuum that work for them)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as comm:
                    if comm.read().strip() == "postgres":
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


async def stop(server: Server) -> None:
    if server.proc.returncode is None:
        server.proc.terminate()
        try:
            await asyncio.wait_for(server.proc.wait(), 30)
        except TimeoutError:
            server.proc.kill()
            await server.proc.wait()
