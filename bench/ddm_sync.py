"""DDM sync throughput of the device channel on PostgreSQL, against a bare FastAPI endpoint
serving the same bytes (issue 5).

Processes, all on this machine: the device channel as `managed-os serve device-channel` (uvicorn,
one worker) once per fleet size, each on its own fresh PostgreSQL database, HMAC on (requests
signed, responses signed), in-process bus with the outbox relay running; the baseline
`bench/bare_app.py` under the same uvicorn settings, no middleware, no database, unsigned; and
the load generator `bench/loadgen.py`, a separate process per measurement.

Fleets are enrolled by bulk COPY straight into the device-channel database: one blueprint
with a real compiled policy (a macOS 26 minimum-version item on the bundled release data), and
per device exactly what registration plus a full status report would have stored (status,
facts, manifest token, push row), in four hardware/OS profiles. Every request picks a random
enrolled device. `PUT /ddm/status` is an incremental report (install state); each one commits
its device row and outbox event, and the relay publishes and deletes the event.

Each (endpoint, target) is measured in ROUNDS rounds of SECONDS, interleaved with the
baseline, so a neighbour's load on this 2-core machine hits both sides alike. Printed: req/s,
p50/p99, throughput as a ratio of the baseline (targets: sync ≥ 0.8, status ≥ 0.5), and the
per-request cost of the largest fleet over the smallest (target ≤ 1.2).

Knobs: BENCH_FLEETS (1000,100000), BENCH_SECONDS (3), BENCH_ROUNDS (3),
BENCH_CONCURRENCY (32), BENCH_BASE_PORT (18581).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.support import Server, fresh_database, start, stop
from catalog.feeds import parse_gdmf
from declarations.compiler import compile_blueprint, policy_token
from declarations.schemas import LibraryItem
from device_channel import models
from device_channel.main import SPEC
from device_channel.repository import DeviceChannelUnitOfWork
from device_channel.service import facts_from_status
from managed_os import ddm
from managed_os.manifest import build_manifest
from managed_os.policy import Policy

FLEETS = [int(n) for n in os.environ.get("BENCH_FLEETS", "1000,100000").split(",")]
SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "32"))
BASE_PORT = int(os.environ.get("BENCH_BASE_PORT", "18581"))

HMAC_KEY = "bench-ddm-hmac-key"
AUTH_SECRET = "bench-auth-secret-0123456789abcdef0123456789"
FEEDS = Path(__file__).resolve().parents[1] / "tests" / "data" / "feeds"
NOW = datetime(2026, 8, 25, 12, tzinfo=UTC)
BLUEPRINT = "bench-blueprint"
# (OS version, build, board id, model): a mix of up to date, behind and older-major Macs.
PROFILES = [
    ("26.5", "25F71", "J160AP", "Mac15,3"),
    ("26.6.2", "25G83", "J152FAP", "Mac14,2"),
    ("26.3.1", "25D771280a", "J180dAP", "Mac16,1"),
    ("15.7.9", "24G830", "J132AP", "MacBookPro16,1"),
]
STATUS_BODY = json.dumps(
    {
        "StatusItems": {"softwareupdate": {"install-state": "downloading"}},
        "Errors": [],
        "FullReport": False,
    }
).encode()
ENDPOINTS = {
    "tokens": ("GET", "/ddm/tokens", b"", 0.8),
    "declaration-items": ("GET", "/ddm/declaration-items", b"", 0.8),
    "status": ("PUT", "/ddm/status", STATUS_BODY, 0.5),
}
FLEET_TARGET = 1.2


def sign(body: bytes) -> str:
    return base64.b64encode(hmac.new(HMAC_KEY.encode(), body, hashlib.sha256).digest()).decode()


def blueprint_policy() -> Policy:
    item = LibraryItem.model_validate(
        {
            "id": str(uuid.UUID(int=1)),
            "major": 26,
            "label": "bench",
            "blueprint_ids": [BLUEPRINT],
            "installation_method": "continuously_enforce",
            "version_enforcement": {
                "mode": "minimum",
                "version": "26.6.2",
                "deadline": "2026-09-15",
                "at": "17:00",
            },
            "upgrade_enforced_since": NOW,
            "created_at": NOW,
            "updated_at": NOW,
        }
    )
    releases = parse_gdmf((FEEDS / "gdmf_pmv_2026-08-22_sofa_cache.json").read_bytes())
    candidates = compile_blueprint([item], releases)
    return Policy(
        blueprint_id=BLUEPRINT, revision=1, token=policy_token(candidates), candidates=candidates
    )


def full_report(version: str, build: str, board: str, model: str) -> bytes:
    items = {
        "device": {
            "operating-system": {"version": version, "build-version": build},
            "model": {"identifier": model},
        },
        "softwareupdate": {"device-id": board, "install-state": "none"},
    }
    return json.dumps({"StatusItems": items, "Errors": [], "FullReport": True}).encode()


async def enrol(engine: AsyncEngine, size: int, policy: Policy) -> list[str]:
    """`size` devices on the blueprint, stored as registration + a full report would."""
    async with DeviceChannelUnitOfWork(engine, models.outbox, models.processed_events) as uow:
        await uow.policies.put(policy, NOW)
        await uow.commit()
    rows: list[tuple[Any, ...]] = []
    ids = [f"BENCH-{n:06d}" for n in range(size)]
    profiles = []
    for profile in PROFILES:
        status = ddm.merge_status({}, ddm.parse_status_report(full_report(*profile)))
        facts = facts_from_status("-", ddm.StatusView(status))
        profiles.append((dict(status), facts))
    for n, eid in enumerate(ids):
        status, template = profiles[n % len(profiles)]
        facts = template.model_copy(update={"enrollment_id": eid})
        token = build_manifest(policy, facts).token
        rows.append(
            (
                eid,
                BLUEPRINT,
                f"C02BENCH{n:06d}",
                PROFILES[n % len(PROFILES)][3],
                json.dumps(facts.model_dump(mode="json")),
                json.dumps(status),
                token,
                NOW,
                NOW,
                NOW,
                NOW,
            )
        )
    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        await raw.copy_records_to_table(
            "devices",
            records=rows,
            columns=[
                "enrollment_id",
                "blueprint_id",
                "serial_number",
                "model",
                "facts",
                "status",
                "declarations_token",
                "manifest_changed_at",
                "last_report_at",
                "created_at",
                "updated_at",
            ],
        )
        await raw.copy_records_to_table(
            "push_queue",
            records=[(r[0], r[6], NOW, 0, NOW) for r in rows],
            columns=[
                "enrollment_id",
                "declarations_token",
                "queued_at",
                "attempts",
                "next_attempt_at",
            ],
        )
        await conn.execute(text("ANALYZE devices"))
        await conn.commit()
    return ids


async def cache_warm(port: int, size: int) -> None:
    """Wait until the service's sync cache holds the fleet (`MOS_DEVICE_CHANNEL_SYNC_CACHE_WARM`
    fills it at start in the background)."""
    async with httpx.AsyncClient(timeout=5) as http:
        for _ in range(600):
            metrics = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
            found = re.search(r"^mos_device_channel_sync_cache_devices (\S+)$", metrics, re.M)
            if found and float(found.group(1)) >= size:
                return
            await asyncio.sleep(0.1)
    raise SystemExit(f"the sync cache on :{port} did not fill")


def device_channel_env(url: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOS_")}
    env.update(
        MOS_DEVICE_CHANNEL_DATABASE_URL=url,
        MOS_DEVICE_CHANNEL_PORT=str(port),
        MOS_DEVICE_CHANNEL_HMAC_KEY=HMAC_KEY,
        MOS_DEVICE_CHANNEL_AUTH_SECRET=AUTH_SECRET,
        MOS_DEVICE_CHANNEL_BUS="inprocess",
        MOS_DEVICE_CHANNEL_LOG_LEVEL="WARNING",
    )
    return env


async def signed_get(http: httpx.AsyncClient, port: int, path: str, eid: str) -> bytes:
    r = await http.get(
        f"http://127.0.0.1:{port}{path}",
        headers={"X-Enrollment-ID": eid, "X-Hmac-Signature": sign(b"")},
    )
    r.raise_for_status()
    assert r.headers["x-hmac-signature"] == sign(r.content)
    return r.content


@dataclass
class Figures:
    count: int = 0
    seconds: float = 0.0
    errors: int = 0
    first_error: str = ""
    rates: list[float] = field(default_factory=list)
    latencies_us: list[int] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies_us)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000 if ordered else 0.0


async def measure(port: int, endpoint: str, ids_file: Path, figures: Figures) -> None:
    method, path, body, _ = ENDPOINTS[endpoint]
    job = {
        "port": port,
        "method": method,
        "path": path,
        "headers": {"X-Hmac-Signature": sign(body), "Content-Type": "application/json"}
        if body
        else {"X-Hmac-Signature": sign(body)},
        "body": body.decode("latin-1"),
        "ids_file": str(ids_file),
        "seconds": SECONDS,
        "warmup": 0.3,
        "concurrency": CONCURRENCY,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.loadgen",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate(json.dumps(job).encode())
    result = json.loads(out)
    figures.count += result["count"]
    figures.seconds += result["seconds"]
    figures.errors += result["errors"]
    figures.first_error = figures.first_error or result["first_error"]
    figures.rates.append(result["count"] / result["seconds"])
    figures.latencies_us.extend(result["latencies_us"])


async def published(port: int) -> int:
    async with httpx.AsyncClient(timeout=5) as http:
        metrics = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    found = re.search(r"^mos_outbox_published_total\{[^}]*\} (\S+)$", metrics, re.M)
    return int(float(found.group(1))) if found else 0


@contextlib.asynccontextmanager
async def servers_running() -> AsyncIterator[list[Server]]:
    running: list[Server] = []
    try:
        yield running
    finally:
        for server in running:
            await stop(server)


async def main() -> None:
    policy = blueprint_policy()
    with tempfile.TemporaryDirectory() as tmp:
        async with contextlib.AsyncExitStack() as stack:
            running = await stack.enter_async_context(servers_running())
            engines: dict[int, AsyncEngine] = {}
            id_files: dict[int, Path] = {}
            ports: dict[str, int] = {}
            started = time.perf_counter()
            for n, size in enumerate(FLEETS):
                engine = await stack.enter_async_context(fresh_database(SPEC))
                ids = await enrol(engine, size, policy)
                id_files[size] = Path(tmp) / f"ids-{size}.txt"
                id_files[size].write_text("\n".join(ids))
                url = engine.url.render_as_string(hide_password=False)
                port = BASE_PORT + 1 + n
                argv = [sys.executable, "-m", "managed_os", "serve", "device-channel"]
                running.append(await start(f"{size}", port, argv, device_channel_env(url, port)))
                await cache_warm(port, size)
                engines[size], ports[f"{size}"] = engine, port
            enrolled = time.perf_counter() - started
            smallest = FLEETS[0]
            first = Path(id_files[smallest].read_text().split()[0])
            async with httpx.AsyncClient(timeout=10) as http:
                bodies = {
                    name: (await signed_get(http, ports[f"{smallest}"], path, str(first))).decode()
                    for name, (_, path, _, _) in ENDPOINTS.items()
                    if name != "status"
                }
            bodies_file = Path(tmp) / "bodies.json"
            bodies_file.write_text(json.dumps(bodies))
            argv = [sys.executable, "-m", "bench.bare_app", str(BASE_PORT), str(bodies_file)]
            running.append(await start("bare", BASE_PORT, argv, dict(os.environ)))
            ports["bare"] = BASE_PORT

            print(
                f"DDM sync benchmark (issue 5): device channel alone, `managed-os serve "
                f"device-channel` (uvicorn, 1 worker) on PostgreSQL, HMAC on (requests verified, "
                f"responses signed); baseline: bare FastAPI app serving the same bytes, no "
                f"middleware, unsigned. Fleets {', '.join(f'{s:,}' for s in FLEETS)} enrolled in "
                f"{enrolled:.1f} s; {CONCURRENCY} connections; {ROUNDS} x {SECONDS:g} s per cell, "
                f"interleaved with the baseline; load from a separate process."
            )
            results: dict[tuple[str, str], Figures] = {}
            targets = ["bare", *(f"{s}" for s in FLEETS)]
            for endpoint in ENDPOINTS:
                for r in range(ROUNDS):
                    order = targets[r % len(targets) :] + targets[: r % len(targets)]
                    for target in order:
                        ids_file = id_files[smallest if target == "bare" else int(target)]
                        figures = results.setdefault((endpoint, target), Figures())
                        await measure(ports[target], endpoint, ids_file, figures)
            report(results, targets)
            relayed = {size: await published(ports[f"{size}"]) for size in FLEETS}
            for size, engine in engines.items():
                async with engine.connect() as conn:
                    left = await conn.scalar(select(func.count()).select_from(models.outbox))
                accepted = results[("status", f"{size}")]
                print(
                    f"fleet {size:,}: status reports answered 200 while measured: "
                    f"{accepted.count - accepted.errors:,}; events relayed by the outbox relay "
                    f"(warm-up included): {relayed[size]:,}; outbox rows left: {left}"
                )


def report(results: dict[tuple[str, str], Figures], targets: list[str]) -> None:
    head = (
        f"{'endpoint':<20}{'fleet':>9}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'vs bare':>9}{'rounds':>14}{'target':>8}  result"
    )
    print(head)
    print("-" * len(head))
    for endpoint, (_, _, _, target) in ENDPOINTS.items():
        bare = results[(endpoint, "bare")]
        for name in targets:
            f = results[(endpoint, name)]
            ratio = f.rate / bare.rate
            spread = [a / b for a, b in zip(f.rates, bare.rates, strict=True)]
            rounds = f"{min(spread):.2f}-{max(spread):.2f}"
            fleet = "-" if name == "bare" else f"{int(name):,}"
            verdict = "" if name == "bare" else ("pass" if ratio >= target else "FAIL")
            if f.errors:
                verdict += f" ({f.errors} errors: {f.first_error[:120]!r})"
            print(
                f"{endpoint:<20}{fleet:>9}{f.rate:>9.0f}{f.quantile(0.5):>9.2f}"
                f"{f.quantile(0.99):>9.2f}{ratio:>8.2f}x{rounds:>14}"
                f"{'' if name == 'bare' else f'≥ {target}':>8}  {verdict}"
            )
    if len(targets) > 2:
        small, large = targets[1], targets[-1]
        print(
            f"\nPer-request cost, fleet {int(large):,} over fleet {int(small):,} "
            f"(throughput ratio; target ≤ {FLEET_TARGET}):"
        )
        for endpoint in ENDPOINTS:
            a, b = results[(endpoint, small)], results[(endpoint, large)]
            cost = a.rate / b.rate
            p99 = b.quantile(0.99) / a.quantile(0.99)
            verdict = "pass" if cost <= FLEET_TARGET else "FAIL"
            print(f"  {endpoint:<20} cost {cost:.2f}   p99 {p99:.2f}   {verdict}")


if __name__ == "__main__":
    asyncio.run(main())
