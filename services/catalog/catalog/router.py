"""Catalog REST API."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from catalog.feeds.fetch import Fetcher
from catalog.feeds.merge import release_order
from catalog.repository import BoardDevice, SourceState
from catalog.service import SOURCES, latest_pair, source_urls, sync_source, with_expiry
from catalog.settings import CatalogSettings
from managed_os.app import Ctx, scope
from managed_os.errors import InvalidInput, NotFound
from managed_os.events import ReleaseData
from managed_os.versions import major_name

router = APIRouter(prefix="/v1", tags=["catalog"])
READ = scope("catalog:read")
WRITE = scope("catalog:write")
Limit = Annotated[int, Query(ge=1, le=500, description="Page size.")]
Major = Annotated[int, Path(ge=1, le=999, description="macOS major, e.g. 26")]
MajorFilter = Annotated[int | None, Query(ge=1, le=999, description="macOS major, e.g. 26")]
BoardId = Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_,.\-]*$")]
Build = Annotated[str, Path(max_length=32, pattern=r"^[0-9A-Za-z]+$", description="e.g. 25G83")]
Offset = Annotated[int, Query(ge=0, description="Items to skip.")]


class ReleasePage(BaseModel):
    items: list[ReleaseData]
    total: int
    limit: int
    offset: int


class MajorLatest(BaseModel):
    major: int
    name: str | None
    latest: ReleaseData
    bsi: ReleaseData | None


class SourceOut(BaseModel):
    name: str
    url: str
    ok: bool
    last_attempt: Any = None
    last_success: Any = None
    last_changed: Any = None
    last_error: str | None = None
    used_url: str | None = None
    next_due: Any = None
    releases_listed: int = 0


def _latest_per_major(rels: list[ReleaseData]) -> set[tuple[str, str | None]]:
    majors = {r.major for r in rels}
    keep = set()
    for m in majors:
        latest, _ = latest_pair([r for r in rels if r.major == m])
        keep.add((latest.version, latest.build))
    return keep


@router.get("/releases", dependencies=[READ], response_model=ReleasePage)
async def list_releases(
    ctx: Ctx,
    major: MajorFilter = None,
    kind: Literal["major", "update", "bsi"] | None = None,
    device_id: BoardId = None,
    since: Annotated[date | None, Query(description="Released on or after this date")] = None,
    include_expired: Annotated[
        bool, Query(description="Include expired releases (the latest of a major always shows)")
    ] = True,
    limit: Limit = 100,
    offset: Offset = 0,
) -> ReleasePage:
    async with ctx.uow() as uow:
        rels = await (uow.releases.by_major(major) if major is not None else uow.releases.all())
    today = ctx.clock.now().date()
    rels = [with_expiry(r, today) for r in rels]
    if not include_expired and rels:
        latest = _latest_per_major(rels)
        rels = [r for r in rels if not r.expired or (r.version, r.build) in latest]
    rels = [
        r
        for r in rels
        if (kind is None or r.kind == kind)
        and (device_id is None or device_id in r.supported_devices)
        and (since is None or (r.release_date is not None and r.release_date >= since))
    ]
    rels.sort(key=release_order, reverse=True)
    page = rels[offset : offset + limit]
    return ReleasePage(items=page, total=len(rels), limit=limit, offset=offset)


@router.get("/releases/{build}", dependencies=[READ], response_model=ReleaseData)
async def get_release(ctx: Ctx, build: Build) -> ReleaseData:
    async with ctx.uow() as uow:
        matches = await uow.releases.by_build(build)
    if not matches:
        raise NotFound(f"no release with build {build!r}")
    return with_expiry(max(matches, key=release_order), ctx.clock.now().date())


@router.get("/majors", dependencies=[READ])
async def list_majors(ctx: Ctx) -> dict[str, list[MajorLatest]]:
    async with ctx.uow() as uow:
        rels = await uow.releases.all()
    today = ctx.clock.now().date()
    out = []
    for m in sorted({r.major for r in rels}, reverse=True):
        mine = [r for r in rels if r.major == m]
        if any(r.kind != "bsi" for r in mine):
            out.append(_major(m, mine, today))
    return {"items": out}


@router.get("/majors/{major}/latest", dependencies=[READ], response_model=MajorLatest)
async def major_latest(
    ctx: Ctx,
    major: Major,
    device_id: BoardId = None,
) -> MajorLatest:
    """The latest OS update of a major and, if any, the BSI that applies on top of it. With
    `device_id`, only releases whose device list includes that board id count."""
    async with ctx.uow() as uow:
        rels = await uow.releases.by_major(major)
    if device_id is not None:
        rels = [r for r in rels if device_id in r.supported_devices]
    if not any(r.kind != "bsi" for r in rels):
        which = f" supporting {device_id}" if device_id else ""
        raise NotFound(f"no releases known for macOS {major}{which}")
    return _major(major, rels, ctx.clock.now().date(), one_device=device_id is not None)


def _major(
    major: int, rels: list[ReleaseData], today: date, one_device: bool = False
) -> MajorLatest:
    latest, bsi = latest_pair(rels, one_device=one_device)
    return MajorLatest(
        major=major,
        name=major_name(major),
        latest=with_expiry(latest, today),
        bsi=with_expiry(bsi, today) if bsi else None,
    )


@router.post("/sync", dependencies=[WRITE])
async def sync_now(
    ctx: Ctx,
    source: Annotated[Literal["gdmf", "sofa", "all"], Query(description="Which source")] = "all",
) -> dict[str, Any]:
    """Sync now, regardless of the schedule; reports what changed per source."""
    settings = cast(CatalogSettings, ctx.settings)
    fetcher: Fetcher = ctx.extras["fetcher"]
    names = [n for n in (SOURCES if source == "all" else (source,)) if source_urls(settings, n)]
    if not names:
        raise InvalidInput(f"no URL is configured for {source!r}")
    results = [
        await sync_source(ctx.uow(), fetcher, settings, name, ctx.clock.now()) for name in names
    ]
    return {"results": [asdict(r) for r in results]}


@router.get("/sources", dependencies=[READ])
async def list_sources(ctx: Ctx) -> dict[str, list[SourceOut]]:
    async with ctx.uow() as uow:
        states: list[SourceState] = await uow.sources.all()
    return {
        "items": [
            SourceOut(**s.model_dump(exclude={"etag", "last_modified", "body_sha256"}))
            for s in states
        ]
    }


@router.get("/devices", dependencies=[READ])
async def list_devices(ctx: Ctx) -> dict[str, list[BoardDevice]]:
    """Board ids (as in GDMF SupportedDevices and softwareupdate.device-id) → model and name."""
    async with ctx.uow() as uow:
        return {"items": await uow.devices.all()}
