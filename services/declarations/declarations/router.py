"""Declarations REST API."""

from __future__ import annotations

from fastapi import APIRouter, status

from declarations import service
from declarations.schemas import Blueprint, BlueprintIn, LibraryItem, LibraryItemIn, PolicyRevision
from managed_os.app import Ctx, scope
from managed_os.errors import NotFound

router = APIRouter(prefix="/v1", tags=["declarations"])
READ = scope("declarations:read")
WRITE = scope("declarations:write")


@router.post("/blueprints", dependencies=[WRITE], status_code=status.HTTP_201_CREATED)
async def create_blueprint(ctx: Ctx, body: BlueprintIn) -> Blueprint:
    async with ctx.uow() as uow:
        bp = await service.create_blueprint(uow, body, ctx.clock.now())
        await uow.commit()
    return bp


@router.get("/blueprints", dependencies=[READ])
async def list_blueprints(ctx: Ctx) -> dict[str, list[Blueprint]]:
    async with ctx.uow() as uow:
        return {"items": await uow.blueprints.list_all()}


@router.get("/blueprints/{blueprint_id}", dependencies=[READ])
async def get_blueprint(ctx: Ctx, blueprint_id: str) -> Blueprint:
    async with ctx.uow() as uow:
        return await service.get_blueprint(uow, blueprint_id)


@router.get("/blueprints/{blueprint_id}/policy", dependencies=[READ])
async def get_policy(ctx: Ctx, blueprint_id: str) -> PolicyRevision:
    async with ctx.uow() as uow:
        await service.get_blueprint(uow, blueprint_id)
        rev = await uow.policies.latest(blueprint_id)
    if rev is None:
        raise NotFound(f"blueprint {blueprint_id} has no compiled policy yet")
    return rev


@router.get("/blueprints/{blueprint_id}/policy/revisions", dependencies=[READ])
async def list_policy_revisions(ctx: Ctx, blueprint_id: str) -> dict[str, list[PolicyRevision]]:
    async with ctx.uow() as uow:
        await service.get_blueprint(uow, blueprint_id)
        return {"items": await uow.policies.revisions(blueprint_id)}


@router.post("/library-items", dependencies=[WRITE], status_code=status.HTTP_201_CREATED)
async def create_item(ctx: Ctx, body: LibraryItemIn) -> LibraryItem:
    async with ctx.uow() as uow:
        item = await service.create_item(uow, body, ctx.clock.now())
        await uow.commit()
    return item


@router.get("/library-items", dependencies=[READ])
async def list_items(ctx: Ctx) -> dict[str, list[LibraryItem]]:
    async with ctx.uow() as uow:
        return {"items": await uow.items.list_all()}


@router.get("/library-items/{item_id}", dependencies=[READ])
async def get_item(ctx: Ctx, item_id: str) -> LibraryItem:
    async with ctx.uow() as uow:
        item = await uow.items.get(item_id)
    if item is None:
        raise NotFound(f"no library item {item_id}")
    return item
