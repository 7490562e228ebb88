"""Catalog use cases: sync a source, merge every source's last good view into the release
table, answer release queries. A failed, empty or malformed fetch changes no release."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from catalog.feeds import FeedError, merge_release, merge_sources, parse_gdmf, parse_sofa
from catalog.feeds.fetch import Fetched, Fetcher
from catalog.feeds.merge import Key, key_of, release_order
from catalog.repository import BoardDevice, CatalogUnitOfWork, SourceState
from catalog.settings import CatalogSettings
from managed_os.errors import NotFound
from managed_os.events import ReleaseData, ReleasePublished, ReleaseUpdated, to_event

log = logging.getLogger(__name__)
SOURCE = "/managed-os/catalog"
SOURCES = ("gdmf", "sofa")
COMPARED = (
    "prerequisite_build",
    "kind",
    "release_date",
    "expiration_date",
    "supported_devices",
    "devices_known",
    "listed_by_apple",
    "cves",
    "exploited_cves",
    "security_info",
    "sources",
)


@dataclass
class SyncResult:
    source: str
    ok: bool
    changed: bool = False
    error: str | None = None
    used_url: str | None = None
    published: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: int = 0


def fetcher_for(settings: CatalogSettings) -> Fetcher:
    return Fetcher(
        timeout=settings.fetch_timeout_seconds,
        retries=settings.fetch_retries,
        backoff_base=settings.fetch_backoff_seconds,
        backoff_max=settings.fetch_backoff_max_seconds,
        ca_bundle=settings.ca_bundle or None,
    )


def source_urls(settings: CatalogSettings, name: str) -> list[str]:
    """The URLs to try for a source, in order (SOFA v2, then its v1 fallback)."""
    urls = [settings.gdmf_url] if name == "gdmf" else [settings.sofa_url, settings.sofa_v1_url]
    return [u for u in urls if u]


def label(rel: ReleaseData) -> str:
    text = f"{rel.version} {rel.extra}" if rel.extra else rel.version
    return f"{text} ({rel.build})" if rel.build else text


async def _fetch_and_parse(
    fetcher: Fetcher, name: str, urls: list[str], state: SourceState | None
) -> tuple[str, Fetched, list[ReleaseData] | None, list[BoardDevice] | None]:
    """Try each URL; returns (url used, fetch result, observations or None if unchanged,
    devices or None). Raises FeedError with every URL's reason when all fail."""
    reasons: list[str] = []
    for url in urls:
        same_url = state is not None and state.used_url == url
        try:
            fetched = await fetcher.fetch(
                url,
                etag=state.etag if same_url and state else None,
                last_modified=state.last_modified if same_url and state else None,
            )
            if fetched.body is None:
                return url, fetched, None, None
            digest = hashlib.sha256(fetched.body).hexdigest()
            if same_url and state and state.body_sha256 == digest and state.last_changed:
                return url, fetched, None, None
            if name == "gdmf":
                return url, fetched, parse_gdmf(fetched.body), None
            feed = parse_sofa(fetched.body)
            devices = [BoardDevice(**vars(d)) for d in feed.devices]
            return url, fetched, feed.releases, devices
        except FeedError as exc:
            reasons.append(str(exc))
    raise FeedError("; ".join(reasons) or f"no URL configured for {name}")


async def sync_source(
    uow: CatalogUnitOfWork, fetcher: Fetcher, settings: CatalogSettings, name: str, now: datetime
) -> SyncResult:
    """Fetch one source and, if what it says changed, merge all sources into the catalog.
    Never raises for a bad source: every failure is recorded on it and returned."""
    urls = source_urls(settings, name)
    try:
        return await _sync(uow, fetcher, name, urls, now)
    except FeedError as exc:
        error = str(exc)
    except Exception as exc:  # a bug or the database: recorded, logged, never a 500
        log.exception("catalog sync failed", extra={"source": name})
        error = f"internal error: {exc.__class__.__name__}: {exc}"
    try:
        async with uow:
            await uow.sources.failed(name, urls[0] if urls else "", now, error)
            await uow.commit()
    except Exception:
        log.exception("could not record the failed sync", extra={"source": name})
    log.warning("feed sync failed", extra={"source": name, "error": error})
    return SyncResult(name, ok=False, error=error)


async def _sync(
    uow: CatalogUnitOfWork, fetcher: Fetcher, name: str, urls: list[str], now: datetime
) -> SyncResult:
    async with uow:
        state = await uow.sources.get(name)
    url, fetched, observations, devices = await _fetch_and_parse(fetcher, name, urls, state)
    result = SyncResult(name, ok=True, used_url=url)
    async with uow.writer_lock(), uow:
        await uow.lock_catalog()
        if observations is None:
            await uow.sources.succeeded(name, url, now)
            await uow.commit()
            return result
        digest = hashlib.sha256(fetched.body or b"").hexdigest()
        if name == "gdmf" and not await _plausible(uow, observations, digest):
            await uow.commit()
            raise FeedError(
                "GDMF response drops most of the builds it listed before; held until the "
                "same response is seen again"
            )
        await uow.sources.succeeded(
            name,
            url,
            now,
            used_url=url,
            etag=fetched.etag,
            last_modified=fetched.last_modified,
            body_sha256=digest,
            observations=observations,
            held_sha256=None,
        )
        if devices:
            await uow.devices.upsert_changed(devices)
        await _reconcile(uow, now, result)
        result.changed = bool(result.published or result.updated)
        await uow.commit()
    return result


async def _plausible(uow: CatalogUnitOfWork, observations: list[ReleaseData], digest: str) -> bool:
    """A GDMF body listing fewer than half as many builds as the last good one is held (once):
    a truncated-but-valid response must not flag the whole catalog as withdrawn. (Counts,
    not overlap: after a long outage most builds have legitimately been replaced.)"""
    previous = (await uow.sources.observations()).get("gdmf") or []
    if len(observations) * 2 >= len(previous):
        return True
    state = await uow.sources.get("gdmf")
    if state is not None and state.held_sha256 == digest:
        return True  # the same response twice: Apple really did withdraw them
    await uow.sources.hold("gdmf", digest)
    return False


async def _reconcile(uow: CatalogUnitOfWork, now: datetime, result: SyncResult) -> None:
    """Merge the sources' last good views and apply the difference to the release table."""
    views = await uow.sources.observations()
    gdmf = views.get("gdmf")
    gdmf_state = await uow.sources.get("gdmf")
    listed = {key_of(r) for r in gdmf} if gdmf else None
    # Releases from the day of GDMF's last good fetch on cannot be judged "not listed" yet.
    last = gdmf_state.last_success if gdmf_state else None
    seen_until = last.date() if last else None
    stored = await uow.releases.all()
    known = {key_of(r): r for r in stored}
    merged = {key_of(r): r for r in merge_sources(gdmf or [], views.get("sofa") or [], stored)}
    # Releases no source lists any more are kept; only their listing flag can change.
    for key, kept in known.items():
        merged.setdefault(key, kept)
    for key, seen in sorted(merged.items(), key=lambda kv: release_order(kv[1])):
        rel = seen.model_copy(update={"listed_by_apple": _listed(key, seen, listed, seen_until)})
        old = known.get(key)
        if old is None:
            new = rel.model_copy(
                update={"first_seen": now, "release_date": rel.release_date or now.date()}
            )
            await uow.releases.add(new, now)
            event = to_event(
                ReleasePublished(release=new),
                source=SOURCE,
                subject=rel.build or label(rel),
                time=now,
            )
            await uow.outbox.add(ReleasePublished.TOPIC, event)
            result.published.append(label(rel))
            continue
        updated = merge_release(old, rel).model_copy(
            update={"listed_by_apple": rel.listed_by_apple}
        )
        changed = [f for f in COMPARED if getattr(updated, f) != getattr(old, f)]
        if not changed:
            result.unchanged += 1
            continue
        await uow.releases.replace(updated, now)
        payload = ReleaseUpdated(release=updated, changed=changed)
        event = to_event(payload, source=SOURCE, subject=rel.build or label(rel), time=now)
        await uow.outbox.add(ReleaseUpdated.TOPIC, event)
        result.updated.append(label(rel))


def _listed(
    key: Key, rel: ReleaseData, listed: set[Key] | None, seen_until: date | None
) -> bool | None:
    if listed is None:
        return None
    if key in listed:
        return True
    if seen_until is None or (rel.release_date is not None and rel.release_date >= seen_until):
        return None
    return False


async def run_due_syncs(
    uow_factory: Callable[[], CatalogUnitOfWork],
    fetcher: Fetcher,
    settings: CatalogSettings,
    now: datetime,
) -> list[SyncResult]:
    """Sync every source whose schedule is due, claiming it first so one replica syncs it."""
    results = []
    intervals = {"gdmf": settings.gdmf_interval_seconds, "sofa": settings.sofa_interval_seconds}
    for name in SOURCES:
        urls = source_urls(settings, name)
        if not urls:
            continue
        uow = uow_factory()
        async with uow:
            claimed = await uow.sources.claim_due(
                name, urls[0], now, now + timedelta(seconds=intervals[name])
            )
            await uow.commit()
        if not claimed:
            continue
        result = await sync_source(uow_factory(), fetcher, settings, name, now)
        results.append(result)
        if not result.ok:
            retry = min(intervals[name], settings.retry_after_failure_seconds)
            uow = uow_factory()
            async with uow:
                await uow.sources.reschedule(name, now + timedelta(seconds=retry))
                await uow.commit()
    return results


def with_expiry(rel: ReleaseData, today: date) -> ReleaseData:
    """`expired` is judged at read time: Apple's signing window closes on `expiration_date`,
    and a release GDMF no longer lists cannot be installed either."""
    expired = rel.listed_by_apple is False or (
        rel.expiration_date is not None and rel.expiration_date < today
    )
    return rel if rel.expired == expired else rel.model_copy(update={"expired": expired})


def latest_pair(
    rels: list[ReleaseData], *, one_device: bool = False
) -> tuple[ReleaseData, ReleaseData | None]:
    """The latest OS update among `rels` and the newest BSI whose prerequisite is its build."""
    updates = [r for r in rels if r.kind != "bsi"]
    if not updates:
        raise NotFound("no releases known for that major")
    # A version shipped for a few new Macs only (26.3.2 for one model) is not the major's
    # latest for everyone else; callers who care about one Mac filter by its board id first.
    widest = max(len(r.supported_devices) for r in updates)
    general = [r for r in updates if not r.devices_known or 2 * len(r.supported_devices) >= widest]
    updates = updates if one_device else (general or updates)
    newest = max(release_order(r)[0] for r in updates)
    # Of several builds of the newest version, the one most Macs get (device-specific builds
    # are listed by GET /v1/releases).
    latest = max(
        (r for r in updates if release_order(r)[0] == newest),
        key=lambda r: (r.build is not None, len(r.supported_devices), r.build or ""),
    )
    bsis = sorted(
        (
            r
            for r in rels
            if r.kind == "bsi" and latest.build and r.prerequisite_build == latest.build
        ),
        key=release_order,
    )
    return latest, (bsis[-1] if bsis else None)
