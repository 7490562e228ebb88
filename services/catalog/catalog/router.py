"""Catalog REST API."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Query
from pydantic import BaseModel

from catalog.service import latest_for_major, sort_key, sync_gdmf, with_expiry
from catalog.settings import CatalogSettings
from managed_os.app import Ctx, scope
from managed_os.errors import NotFound
from managed_os.events import ReleaseData
from managed_os.versions import major_name

router = APIRouter(prefix="/v1", tags=["catalog"])
READ = scope("catalog:read")
WRITE = scope("catalog:write")


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


@router.get("/releases", dependencies=[READ], response_model=ReleasePage)
async def list_releases(
    ctx: Ctx,
    major: int | None = None,
    kind: Literal["major", "update", "bsi"] | None = None,
    device_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ReleasePage:
    async with ctx.uow() as uow:
        rels = await (uow.releases.by_major(major) if major is not None else uow.releases.all())
    rels = [
        r
        for r in rels
        if (kind is None or r.kind == kind)
        and (device_id is None or device_id in r.supported_devices)
    ]
    today = ctx.clock.now().date()
    rels = [with_expiry(r, today) for r in rels]
    rels.sort(key=sort_key, reverse=True)
    return ReleasePage(
        items=rels[offset : offset + limit], total=len(rels), limit=limit, offset=offset
    )


@router.get("/releases/{build}", dependencies=[READ], response_model=ReleaseData)
async def get_release(ctx: Ctx, build: str) -> ReleaseData:
    async with ctx.uow() as uow:
        matches = [r for r in await uow.releases.all() if r.build == build]
    if not matches:
        raise NotFound(f"no release with build {build!r}")
    return with_expiry(max(matches, key=sort_key), ctx.clock.now().date())


@router.get("/majors/{major}/latest", dependencies=[READ], response_model=MajorLatest)
async def major_latest(ctx: Ctx, major: int) -> MajorLatest:
    async with ctx.uow() as uow:
        latest, bsi = await latest_for_major(uow, major)
    today = ctx.clock.now().date()
    return MajorLatest(
        major=major,
        name=major_name(major),
        latest=with_expiry(latest, today),
        bsi=with_expiry(bsi, today) if bsi else None,
    )


@router.post("/sync", dependencies=[WRITE])
async def sync_now(ctx: Ctx) -> dict[str, Any]:
    settings = cast(CatalogSettings, ctx.settings)
    result = await sync_gdmf(
        ctx.uow(),
        settings.gdmf_url,
        ctx.clock.now(),
        settings.fetch_timeout_seconds,
    )
    return asdict(result)


@router.get("/sources", dependencies=[READ])
async def list_sources(ctx: Ctx) -> dict[str, Any]:
    async with ctx.uow() as uow:
        return {"items": await uow.sources.all()}
