"""DDM sync throughput of the device channel (embedded mode), against a /healthz baseline.

The suite runs in its own process (`managed-os run`); this process is the load generator (an
async httpx client, fixed concurrency, fixed duration). A fleet of devices is enrolled on a
blueprint with a minimum-version item and reports its OS, so every sync computes a real
manifest. Printed: requests, req/s, p50/p99 latency per endpoint, and each endpoint's
throughput as a ratio of the baseline measured in the same run.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

DEVICES = int(os.environ.get("BENCH_DEVICES", "200"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "32"))
BASE_PORT = int(os.environ.get("BENCH_BASE_PORT", "18581"))


def start_suite(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOS_")}
    env["MOS_CATALOG_LOG_LEVEL"] = "WARNING"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "managed_os",
            "run",
            "--data-dir",
            str(data_dir),
            "--base-port",
            str(BASE_PORT),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    token = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if re.fullmatch(r"\s+ey[\w.-]+\s*", line):
            token = line.strip()
            break
    if not token:
        proc.kill()
        raise SystemExit("the suite did not start")
    return proc, token


async def setup_fleet(http: httpx.AsyncClient, token: str) -> tuple[str, list[str]]:
    auth = {"Authorization": f"Bearer {token}"}
    decl, dc = f"http://127.0.0.1:{BASE_PORT + 1}", f"http://127.0.0.1:{BASE_PORT + 2}"
    bp = (await http.post(f"{decl}/v1/blueprints", json={"name": "bench"}, headers=auth)).json()
    item = {
        "major": 26,
        "blueprint_ids": [bp["id"]],
        "installation_method": "continuously_enforce",
        "version_enforcement": {
            "mode": "minimum",
            "version": "26.5",
            "deadline": "2026-09-01",
            "at": "17:00",
        },
    }
    for _ in range(100):
        r = await http.post(f"{decl}/v1/library-items", json=item, headers=auth)
        if r.status_code == 201:
            break
        await asyncio.sleep(0.2)
    ids = [f"BENCH-{n:05d}" for n in range(DEVICES)]
    report = json.dumps(
        {
            "StatusItems": {
                "device": {"operating-system": {"version": "26.4.1", "build-version": "25E253"}}
            },
            "Errors": [],
            "FullReport": True,
        }
    )
    for eid in ids:
        await http.post(
            f"{dc}/v1/devices", json={"enrollment_id": eid, "blueprint_id": bp["id"]}, headers=auth
        )
        await http.put(f"{dc}/ddm/status", content=report, headers={"X-Enrollment-ID": eid})
    for _ in range(100):  # wait for the policy to reach the device channel
        items = (
            await http.get(f"{dc}/ddm/declaration-items", headers={"X-Enrollment-ID": ids[0]})
        ).json()
        if len(items["Declarations"]["Configurations"]) >= 2:
            break
        await asyncio.sleep(0.2)
    return dc, ids


async def load(
    http: httpx.AsyncClient, request: Callable[[], tuple[str, dict[str, str]]]
) -> tuple[int, list[float]]:
    latencies: list[float] = []
    stop_at = time.perf_counter() + SECONDS

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            url, headers = request()
            t0 = time.perf_counter()
            r = await http.get(url, headers=headers)
            latencies.append(time.perf_counter() - t0)
            if r.status_code != 200:
                raise RuntimeError(f"{url}: {r.status_code}")

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return len(latencies), latencies


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc, token = start_suite(Path(tmp) / "data")
        try:
            limits = httpx.Limits(max_connections=CONCURRENCY)
            async with httpx.AsyncClient(timeout=30, limits=limits) as http:
                dc, ids = await setup_fleet(http, token)
                scenarios: dict[str, Callable[[], tuple[str, dict[str, str]]]] = {
                    "GET /healthz (baseline)": lambda: (f"{dc}/healthz", {}),
                    "GET /ddm/tokens": lambda: (
                        f"{dc}/ddm/tokens",
                        {"X-Enrollment-ID": random.choice(ids)},
                    ),
                    "GET /ddm/declaration-items": lambda: (
                        f"{dc}/ddm/declaration-items",
                        {"X-Enrollment-ID": random.choice(ids)},
                    ),
                }
                print(
                    f"DDM sync benchmark: {DEVICES} devices, concurrency {CONCURRENCY}, "
                    f"{SECONDS:.0f} s per endpoint, embedded mode (SQLite), device channel"
                )
                print(
                    f"{'endpoint':<30}{'requests':>10}{'req/s':>10}{'p50 ms':>10}"
                    f"{'p99 ms':>10}{'vs baseline':>13}"
                )
                baseline = 0.0
                for name, request in scenarios.items():
                    count, lat = await load(http, request)
                    rate = count / SECONDS
                    baseline = baseline or rate
                    q = statistics.quantiles(lat, n=100)
                    print(
                        f"{name:<30}{count:>10}{rate:>10.0f}{q[49] * 1000:>10.1f}"
                        f"{q[98] * 1000:>10.1f}{rate / baseline:>12.2f}x"
                    )
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)


if __name__ == "__main__":
    asyncio.run(main())
