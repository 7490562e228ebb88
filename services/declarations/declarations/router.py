"""Declarations REST API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import BaseModel

from declarations import service
from declarations.schemas import (
    Blueprint,
    BlueprintIn,
    BlueprintPatch,
    LibraryItem,
    LibraryItemIn,
    PolicyRevision,
    PreviewIn,
    PreviewOut,
    SelfServiceRequest,
    SelfServiceRequestIn,
)
from managed_os.app import Ctx, scope
from managed_os.errors import NotFound

router = APIRouter(prefix="/v1", tags=["declarations"])
READ = scope("declarations:read")
WRITE = scope("declarations:write")
Id = Annotated[str, Path(max_length=36)]


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
async def get_blueprint(ctx: Ctx, blueprint_id: Id) -> Blueprint:
    async with ctx.uow() as uow:
        return await service.get_blueprint(uow, blueprint_id)


@router.patch("/blueprints/{blueprint_id}", dependencies=[WRITE])
async def update_blueprint(ctx: Ctx, blueprint_id: Id, body: BlueprintPatch) -> Blueprint:
    async with ctx.uow() as uow:
        bp = await service.update_blueprint(uow, blueprint_id, body, ctx.clock.now())
        await uow.commit()
    return bp


@router.delete("/blueprints/{blueprint_id}", dependencies=[WRITE], status_code=204)
async def delete_blueprint(ctx: Ctx, blueprint_id: Id) -> Response:
    """Unassigns its items and publishes an empty policy (its Macs drop the declarations)."""
    async with ctx.uow() as uow:
        await service.delete_blueprint(uow, blueprint_id, ctx.clock.now())
        await uow.commit()
    return Response(status_code=204)


@router.get("/blueprints/{blueprint_id}/policy", dependencies=[READ])
async def get_policy(ctx: Ctx, blueprint_id: Id) -> PolicyRevision:
    async with ctx.uow() as uow:
        await service.get_blueprint(uow, blueprint_id)
        rev = await uow.policies.latest(blueprint_id)
    if rev is None:
        raise NotFound(f"blueprint {blueprint_id} has no compiled policy yet")
    return rev


@router.get("/blueprints/{blueprint_id}/policy/revisions", dependencies=[READ])
async def list_policy_revisions(ctx: Ctx, blueprint_id: Id) -> dict[str, list[PolicyRevision]]:
    async with ctx.uow() as uow:
        await service.get_blueprint(uow, blueprint_id)
        return {"items": await uow.policies.revisions(blueprint_id)}


@router.post("/blueprints/{blueprint_id}/preview", dependencies=[READ])
async def preview(ctx: Ctx, blueprint_id: Id, body: PreviewIn) -> PreviewOut:
    """The declarations a Mac with these facts gets from this blueprint, and why."""
    async with ctx.uow() as uow:
        return await service.preview(uow, blueprint_id, body)


class PolicyPage(BaseModel):
    items: list[PolicyRevision]
    total: int
    limit: int
    offset: int


@router.get("/policies", dependencies=[READ])
async def list_policies(
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> PolicyPage:
    """The latest compiled policy of every blueprint (deleted ones: their final, empty one),
    for read models such as the device channel's to start from."""
    async with ctx.uow() as uow:
        items, total = await uow.policies.latest_page(limit, offset)
    return PolicyPage(items=items, total=total, limit=limit, offset=offset)


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
async def get_item(ctx: Ctx, item_id: Id) -> LibraryItem:
    async with ctx.uow() as uow:
        return await service.get_item(uow, item_id)


@router.put("/library-items/{item_id}", dependencies=[WRITE])
async def replace_item(ctx: Ctx, item_id: Id, body: LibraryItemIn) -> LibraryItem:
    async with ctx.uow() as uow:
        item = await service.replace_item(uow, item_id, body, ctx.clock.now())
        await uow.commit()
    return item


@router.delete("/library-items/{item_id}", dependencies=[WRITE], status_code=204)
async def delete_item(ctx: Ctx, item_id: Id) -> Response:
    async with ctx.uow() as uow:
        await service.delete_item(uow, item_id, ctx.clock.now())
        await uow.commit()
    return Response(status_code=204)


@router.post(
    "/library-items/{item_id}/self-service-requests",
    dependencies=[WRITE],
    status_code=status.HTTP_201_CREATED,
)
async def request_self_service(
    ctx: Ctx, item_id: Id, body: SelfServiceRequestIn
) -> SelfServiceRequest:
    """Give one Mac an upgrade enforcement with a short deadline (recorded for audit)."""
    async with ctx.uow() as uow:
        request = await service.request_self_service(uow, item_id, body, "api", ctx.clock.now())
        await uow.commit()
    return request


@router.get("/library-items/{item_id}/self-service-requests", dependencies=[READ])
async def list_self_service(ctx: Ctx, item_id: Id) -> dict[str, list[SelfServiceRequest]]:
    async with ctx.uow() as uow:
        await service.get_item(uow, item_id)
        return {"items": await uow.requests.for_item(item_id)}
