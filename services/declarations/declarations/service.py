"""Declarations use cases. Each runs inside the caller's unit of work and commits nothing."""

from __future__ import annotations

import uuid
from datetime import datetime

from declarations.compiler import compile_blueprint, policy_token
from declarations.repository import DeclarationsUnitOfWork
from declarations.schemas import (
    Blueprint,
    BlueprintIn,
    LibraryItem,
    LibraryItemIn,
    Minimum,
    PolicyRevision,
    Specific,
)
from managed_os.errors import Conflict, InvalidInput, NotFound
from managed_os.events import PolicyPublished, ReleaseData, to_event
from managed_os.versions import parse_version

SOURCE = "/managed-os/declarations"


async def create_blueprint(
    uow: DeclarationsUnitOfWork, data: BlueprintIn, now: datetime
) -> Blueprint:
    bp = Blueprint(id=str(uuid.uuid4()), created_at=now, updated_at=now, **data.model_dump())
    await uow.blueprints.add(bp)
    await recompile(uow, bp.id, now)
    return bp


async def create_item(
    uow: DeclarationsUnitOfWork, data: LibraryItemIn, now: datetime
) -> LibraryItem:
    ve, bsi = data.version_enforcement, data.bsi_enforcement
    if ve.mode == "rolling" or bsi.mode == "automatic":
        raise InvalidInput(
            "rolling version enforcement and automatic BSI enforcement are not available yet; "
            "use 'minimum', 'specific' or 'do_not_manage' with BSI mode 'none'"
        )
    if isinstance(ve, Minimum | Specific):
        known = {
            parse_version(r.version)
            for r in await uow.releases.by_major(data.major)
            if r.kind != "bsi"
        }
        if parse_version(ve.version) not in known:
            raise InvalidInput(f"macOS {ve.version} is not a release the catalog knows")
    bp_ids = sorted(set(data.blueprint_ids))
    missing = set(bp_ids) - await uow.blueprints.existing_ids(bp_ids)
    if missing:
        raise InvalidInput(f"unknown blueprint ids: {sorted(missing)}")
    for bp in bp_ids:
        other = await uow.items.holder(bp, data.major)
        if other is not None:
            raise Conflict(
                f"blueprint {bp} already has a macOS {data.major} item ({other})",
                details={"blueprint_id": bp, "conflicting_item_id": other},
            )
    item = LibraryItem(
        id=str(uuid.uuid4()),
        upgrade_enforced_since=now if data.installation_method == "continuously_enforce" else None,
        created_at=now,
        updated_at=now,
        **{**data.model_dump(), "blueprint_ids": bp_ids},
    )
    await uow.items.add(item)
    for bp in bp_ids:
        await recompile(uow, bp, now)
    return item


async def recompile(
    uow: DeclarationsUnitOfWork, blueprint_id: str, now: datetime
) -> PolicyRevision | None:
    """Compile a blueprint; store and publish a new revision only if the policy changed."""
    items = await uow.items.for_blueprint(blueprint_id)
    releases: list[ReleaseData] = []
    for major in sorted({i.major for i in items}):
        releases.extend(await uow.releases.by_major(major))
    candidates = compile_blueprint(items, releases)
    token = policy_token(candidates)
    latest = await uow.policies.latest(blueprint_id)
    if latest is not None and latest.token == token:
        return None
    rev = PolicyRevision(
        blueprint_id=blueprint_id,
        revision=(latest.revision + 1) if latest else 1,
        token=token,
        created_at=now,
        candidates=[c.model_dump(mode="json") for c in candidates],
    )
    await uow.policies.add(rev)
    event = PolicyPublished(
        blueprint_id=blueprint_id, revision=rev.revision, token=token, candidates=candidates
    )
    await uow.outbox.add(
        event.TOPIC, to_event(event, source=SOURCE, subject=blueprint_id, time=now)
    )
    return rev


async def on_release(uow: DeclarationsUnitOfWork, release: ReleaseData, now: datetime) -> None:
    """A release appeared or changed: update the view, recompile the blueprints it affects."""
    await uow.releases.upsert(release, now)
    for bp in await uow.items.blueprints_with_major(release.major):
        await recompile(uow, bp, now)


async def get_blueprint(uow: DeclarationsUnitOfWork, blueprint_id: str) -> Blueprint:
    bp = await uow.blueprints.get(blueprint_id)
    if bp is None:
        raise NotFound(f"no blueprint {blueprint_id}")
    return bp
