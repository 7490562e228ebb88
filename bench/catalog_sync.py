"""Catalog sync cost on PostgreSQL: the first full sync of both feeds (GDMF + SOFA v2, real
files, over HTTP from a separate origin process) into an empty database, against an
unchanged re-sync. Two unchanged cases are measured: the origin answers 304 to the
conditional GET, and the origin re-sends the same body (no validators: hash check).

Printed: median times over the rounds, the ratio re-sync / first sync (target < 10 %), and
the rows each re-sync wrote, counted from PostgreSQL itself (row versions, `xmin`).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

from bench.support import fresh_database
from catalog.feeds.fetch import Fetcher
from catalog.main import SPEC
from catalog.repository import CatalogUnitOfWork
from catalog.service import fetcher_for, sync_source
from catalog.settings import CatalogSettings

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
FEEDS = Path(__file__).resolve().parents[1] / "tests" / "data" / "feeds"
PORT = int(os.environ.get("BENCH_FEED_PORT", "18599"))
TABLES = ("releases", "board_devices", "outbox", "sources")
NOW = datetime(2026, 8, 25, tzinfo=UTC)


async def row_versions(engine, table: str) -> set[tuple[str, str]]:
    async with engine.connect() as conn:
        rows = await conn.execute(text(f"SELECT ctid::text, xmin::text FROM {table}"))
        return {(r[0], r[1]) for r in rows}


async def written(engine, before: dict[str, set[tuple[str, str]]]) -> dict[str, int]:
    after = {t: await row_versions(engine, t) for t in TABLES}
    return {t: len(after[t] - before[t]) for t in TABLES}


async def sync_both(make, settings: CatalogSettings, fetcher: Fetcher) -> float:
    started = time.perf_counter()
    for name in ("gdmf", "sofa"):
        result = await sync_source(make(), fetcher, settings, name, NOW)
        if not result.ok:
            raise SystemExit(f"{name} sync failed: {result.error}")
    return time.perf_counter() - started


async def measure(settings: CatalogSettings) -> dict[str, object]:
    """First sync into a fresh database, then one unchanged re-sync."""
    async with fresh_database(SPEC) as engine:

        def make() -> CatalogUnitOfWork:
            return CatalogUnitOfWork(engine, SPEC.outbox_table, SPEC.inbox_table)

        fetcher = fetcher_for(settings)  # one per service process, as in the catalog
        first = await sync_both(make, settings, fetcher)
        before = {t: await row_versions(engine, t) for t in TABLES}
        again = await sync_both(make, settings, fetcher)
        await fetcher.aclose()
        rows = await written(engine, before)
        async with engine.connect() as conn:
            releases = await conn.scalar(text("SELECT count(*) FROM releases"))
        return {"first": first, "again": again, "written": rows, "releases": releases}


async def main() -> None:
    origin = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.feed_origin",
            str(PORT),
            f"pmv={FEEDS / 'gdmf_pmv_2026-08-22_sofa_cache.json'}",
            f"sofa={FEEDS / 'sofa_v2_macos_data_feed.json'}",
        ],
    )
    try:
        await asyncio.sleep(1.5)
        base = f"http://127.0.0.1:{PORT}"
        cases = {
            "origin answers 304 (ETag)": CatalogSettings(
                gdmf_url=f"{base}/pmv", sofa_url=f"{base}/sofa"
            ),
            "origin re-sends the body": CatalogSettings(
                gdmf_url=f"{base}/plain/pmv", sofa_url=f"{base}/plain/sofa"
            ),
        }
        await measure(cases["origin answers 304 (ETag)"])  # warm-up: imports, pools, caches
        results = {label: [await measure(s) for _ in range(ROUNDS)] for label, s in cases.items()}
    finally:
        origin.terminate()
        origin.wait(10)
    _report(results)


def _report(results: dict[str, list[dict[str, object]]]) -> None:
    any_round = next(iter(results.values()))[0]
    print(
        f"Catalog sync on PostgreSQL: GDMF + SOFA v2 (real files over HTTP from a separate "
        f"process), {any_round['releases']} releases, median of {ROUNDS} rounds"
    )
    print(
        f"  {'case':<28}{'first sync':>12}{'re-sync':>10}{'ratio':>8}  rows written by the re-sync"
    )
    for label, rounds in results.items():
        first = statistics.median(float(r["first"]) for r in rounds)  # type: ignore[arg-type]
        again = statistics.median(float(r["again"]) for r in rounds)  # type: ignore[arg-type]
        rows = rounds[-1]["written"]
        times = f"{first * 1000:>9.1f} ms{again * 1000:>7.1f} ms{again / first:>8.3f}"
        print(f"  {label:<28}{times}  {rows}")
    print(
        "  target: re-sync < 10 % of the first sync; no release, device or outbox row written"
        " (`sources` keeps each source's last attempt/success)"
    )


if __name__ == "__main__":
    asyncio.run(main())
