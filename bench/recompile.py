"""Recompiling after a release, on PostgreSQL: 1,000 blueprints, each with its own Managed
OS item for macOS 26 (rolling 2 weeks + automatic BSI), the catalog view loaded with the real
releases of 2026-08-22 except 26.6.2. Then one ReleasePublished for 26.6.2 arrives and the
consumer's handler recompiles every affected blueprint, stores the new revisions and writes
the PolicyPublished events to the outbox, in one transaction.

Printed: that handler's wall time (target: under 2 s for the 1,000) and its cost per
blueprint; the cold compile of a single blueprint on its own (no shared rule work), and the
size of what was written.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

from bench.support import fresh_database
from catalog.feeds import merge_sources, parse_gdmf, parse_sofa
from declarations import service
from declarations.compiler import compile_blueprint
from declarations.main import SPEC
from declarations.repository import DeclarationsUnitOfWork
from declarations.schemas import Blueprint, LibraryItem

BLUEPRINTS = int(os.environ.get("BENCH_BLUEPRINTS", "1000"))
FEEDS = Path(__file__).resolve().parents[1] / "tests" / "data" / "feeds"
NOW = datetime(2026, 8, 17, 18, tzinfo=UTC)


def releases():
    return merge_sources(
        parse_gdmf((FEEDS / "gdmf_pmv_2026-08-22_sofa_cache.json").read_bytes()),
        parse_sofa((FEEDS / "sofa_v2_macos_data_feed.json").read_bytes()).releases,
    )


def make_item(blueprint_id: str) -> LibraryItem:
    return LibraryItem.model_validate(
        {
            "id": str(uuid.uuid4()),
            "major": 26,
            "label": "bench",
            "blueprint_ids": [blueprint_id],
            "installation_method": "continuously_enforce",
            "version_enforcement": {"mode": "rolling", "within": "2w", "at": "09:00"},
            "bsi_enforcement": {"mode": "automatic", "within": "2d", "at": "17:00"},
            "upgrade_enforced_since": NOW,
            "created_at": NOW,
            "updated_at": NOW,
        }
    )


async def main() -> None:
    async with fresh_database(SPEC) as engine:

        def make() -> DeclarationsUnitOfWork:
            return DeclarationsUnitOfWork(engine, SPEC.outbox_table, SPEC.inbox_table)

        everything = releases()
        new = [r for r in everything if r.version == "26.6.2"]
        before = [r for r in everything if r.version != "26.6.2"]
        items = []
        async with make() as uow:
            for rel in before:
                await uow.releases.upsert(rel, NOW)
            for n in range(BLUEPRINTS):
                bp = Blueprint(
                    id=str(uuid.uuid4()),
                    name=f"bp-{n}",
                    description="",
                    created_at=NOW,
                    updated_at=NOW,
                )
                await uow.blueprints.add(bp)
                items.append(make_item(bp.id))
                await uow.items.add(items[-1])
            first = time.perf_counter()
            await service.recompile(uow, [i.blueprint_ids[0] for i in items], NOW)
            first = time.perf_counter() - first
            await uow.commit()
        await engine.dispose()  # a cold pool, as for a consumer picking up an event

        async with make() as uow:
            started = time.perf_counter()
            changed = await service.on_releases(uow, new, NOW)
            await uow.commit()
            elapsed = time.perf_counter() - started

        samples = []
        for it in items[:200]:
            t0 = time.perf_counter()
            compile_blueprint([it], everything)
            samples.append(time.perf_counter() - t0)
        async with engine.connect() as conn:
            revisions = await conn.scalar(text("SELECT count(*) FROM policy_revisions"))
            outbox = await conn.scalar(text("SELECT count(*) FROM outbox"))
            size = await conn.scalar(
                text(
                    "SELECT pg_size_pretty(sum(pg_column_size(candidates))) FROM policy_revisions"
                    " WHERE revision = 2"
                )
            )
            candidates = await conn.scalar(
                text(
                    "SELECT avg(jsonb_array_length(candidates)) FROM policy_revisions"
                    " WHERE revision = 2"
                )
            )
    print(
        f"Recompile after one ReleasePublished (26.6.2), PostgreSQL, {BLUEPRINTS} blueprints"
        " each with its own rolling + BSI item for macOS 26"
    )
    print(
        f"  handler (read view, compile, store revisions, write outbox, commit): "
        f"{elapsed * 1000:8.1f} ms for {changed} changed policies   target < 2000 ms"
    )
    print(f"  per blueprint inside that handler: {elapsed / max(changed, 1) * 1000:.2f} ms")
    print(
        f"  one blueprint compiled on its own (pure, cold, median of 200): "
        f"{statistics.median(samples) * 1000:.2f} ms, p95 "
        f"{statistics.quantiles(samples, n=20)[18] * 1000:.2f} ms"
    )
    print(f"  initial compile of all {BLUEPRINTS} (setup): {first * 1000:.1f} ms")
    print(
        f"  written: {revisions} revisions in all, {outbox} outbox events; "
        f"{float(candidates):.1f} candidates per policy, {size} of candidates in revision 2"
    )


if __name__ == "__main__":
    asyncio.run(main())
