"""A small HTTP/1.1 load generator, run as its own process (`python -m bench.loadgen`).

It reads one JSON job on stdin and prints one JSON result on stdout. Each of `concurrency`
keep-alive connections sends one request at a time for `seconds` (after `warmup` seconds that
are not counted), each to a random enrollment id from `ids_file`, and times it. Standard
library only: on this 2-core machine an httpx client tops out near 300 requests/s, far below
what even the bare endpoint serves, so it would have measured itself.

Job: `{"port", "method", "path", "headers", "body" (latin-1 text), "ids_file", "seconds",
"warmup", "concurrency"}`; every request also carries `X-Enrollment-ID`.
Result: `{"count", "seconds", "errors", "first_error", "latencies_us"}` (sorted).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any


def _request(job: dict[str, Any], eid: str) -> bytes:
    body = job.get("body", "").encode("latin-1")
    lines = [f"{job['method']} {job['path']} HTTP/1.1", f"Host: 127.0.0.1:{job['port']}"]
    lines += [f"{k}: {v}" for k, v in job.get("headers", {}).items()]
    lines.append(f"X-Enrollment-ID: {eid}")
    if body or job["method"] != "GET":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _connection(
    job: dict[str, Any], ids: list[str], start: float, stop: float, out: dict[str, Any]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", job["port"])
    latencies: list[int] = out["latencies_us"]
    try:
        while (now := time.perf_counter()) < stop:
            writer.write(_request(job, random.choice(ids)))
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            if now < start:
                continue
            latencies.append(int((time.perf_counter() - now) * 1_000_000))
            status = head[9:12]
            if status != b"200":
                out["errors"] += 1
                out["first_error"] = out["first_error"] or (head + body).decode("latin-1")[:500]
    finally:
        writer.close()


async def run(job: dict[str, Any], ids: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"errors": 0, "first_error": "", "latencies_us": []}
    start = time.perf_counter() + job.get("warmup", 0.3)
    stop = start + job["seconds"]
    await asyncio.gather(
        *(_connection(job, ids, start, stop, out) for _ in range(job["concurrency"]))
    )
    out["latencies_us"].sort()
    out["count"] = len(out["latencies_us"])
    out["seconds"] = job["seconds"]
    return out


def main() -> None:
    job = json.loads(sys.stdin.read())
    ids = Path(job["ids_file"]).read_text().split()
    print(json.dumps(asyncio.run(run(job, ids))))


if __name__ == "__main__":
    main()
