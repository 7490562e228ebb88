"""Catalog use cases: sync a feed into the release table, answer release queries."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import date, datetime
from importlib import resources
from pathlib import Path
from urllib.parse import urlparse

import httpx

from catalog.feeds import FeedError, merge_release, parse_gdmf
from catalog.repository import CatalogUnitOfWork
from managed_os.errors import NotFound
from managed_os.events import ReleaseData, ReleasePublished, ReleaseUpdated, to_event
from managed_os.versions import parse_version

log = logging.getLogger(__name__)
SOURCE = "/managed-os/catalog"
COMPARED = (
    "extra",
    "prerequisite_build",
    "kind",
    "release_date",
    "expiration_date",
    "supported_devices",
    "sources",
)


@dataclass
class SyncResult:
    source: str
    ok: bool
    error: str | None = None
    published: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: int = 0


async def fetch(url: str, timeout: float) -> bytes:
    """Fetch a feed body: `bundled:` (the shipped snapshot), `file://`, or http(s)."""
    if url == "bundled:":
        return resources.files("catalog.data").joinpath("gdmf_snapshot.json").read_bytes()
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return await asyncio.to_thread(Path(parsed.path).read_bytes)
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=True) as client:
        response = await client.get(url)
        response.raise_for_status()
        return response.content


async def sync_gdmf(
    uow: CatalogUnitOfWork, url: str, now: datetime, timeout: float = 30
) -> SyncResult:
    """Fetch, parse and merge. A failed or bad fetch changes no release; it is recorded."""
    try:
        fetched = parse_gdmf(await fetch(url, timeout))
    except (FeedError, OSError, httpx.HTTPError) as exc:
        error = f"{type(exc).__name__}: {exc}"
        async with uow:
            await uow.sources.record("gdmf", url, now, error)
            await uow.commit()
        log.warning("feed sync failed", extra={"source": "gdmf", "error": error})
        return SyncResult("gdmf", ok=False, error=error)
    async with uow:
        result = await apply_releases(uow, fetched, now)
        await uow.sources.record("gdmf", url, now, None)
        await uow.commit()
    return result


async def apply_releases(
    uow: CatalogUnitOfWork, fetched: list[ReleaseData], now: datetime
) -> SyncResult:
    """Merge fetched releases into storage; emit an event for each new or changed one."""
    result = SyncResult("gdmf", ok=True)
    known = {(r.version, r.build): r for r in await uow.releases.all()}
    for rel in fetched:
        old = known.get((rel.version, rel.build))
        if old is None:
            new = rel.model_copy(update={"first_seen": now})
            await uow.releases.add(new, now)
            await uow.outbox.add(
                ReleasePublished.TOPIC,
                to_event(ReleasePublished(release=new), source=SOURCE, subject=rel.build, time=now),
            )
            result.published.append(rel.build)
            continue
        merged = merge_release(old, rel)
        changed = [f for f in COMPARED if getattr(merged, f) != getattr(old, f)]
        if not changed:
            result.unchanged += 1
            continue
        await uow.releases.replace(merged, now)
        payload = ReleaseUpdated(release=merged, changed=changed)
        await uow.outbox.add(
            ReleaseUpdated.TOPIC, to_event(payload, source=SOURCE, subject=rel.build, time=now)
        )
        result.updated.append(rel.build)
    return result


def with_expiry(rel: ReleaseData, today: date) -> ReleaseData:
    """`expired` is judged at read time: Apple's signing window closes on `expiration_date`."""
    expired = rel.expiration_date is not None and rel.expiration_date < today
    return rel if rel.expired == expired else rel.model_copy(update={"expired": expired})


def sort_key(rel: ReleaseData) -> tuple[object, str]:
    return (parse_version(rel.version, rel.extra), rel.build)


async def latest_for_major(
    uow: CatalogUnitOfWork, major: int
) -> tuple[ReleaseData, ReleaseData | None]:
    """The latest OS update of a major and the BSI that applies on top of it, if any."""
    rels = await uow.releases.by_major(major)
    updates = sorted((r for r in rels if r.kind != "bsi"), key=sort_key)
    if not updates:
        raise NotFound(f"no releases known for macOS {major}")
    latest = updates[-1]
    bsis = sorted(
        (r for r in rels if r.kind == "bsi" and r.prerequisite_build == latest.build), key=sort_key
    )
    return latest, (bsis[-1] if bsis else None)
