"""Declarations use cases. Each runs inside the caller's unit of work and commits nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from declarations.compiler import status_subscriptions_candidate
from declarations.compiler.compile import Compiler, token_of
from declarations.repository import DeclarationsUnitOfWork
from declarations.schemas import (
    Blueprint,
    BlueprintIn,
    BlueprintPatch,
    LibraryItem,
    LibraryItemIn,
    Minimum,
    PolicyRevision,
    PreviewDeclaration,
    PreviewIn,
    PreviewOut,
    SelfServiceRequest,
    SelfServiceRequestIn,
    Specific,
)
from managed_os import ddm
from managed_os.cloudevents import CloudEvent
from managed_os.errors import Conflict, InvalidInput, NotFound
from managed_os.events import PolicyPublished, ReleaseData
from managed_os.manifest import build_manifest
from managed_os.policy import Candidate, DeviceFacts, Policy, PolicyItem
from managed_os.versions import parse_version

SOURCE = "/managed-os/declarations"


# ---- blueprints -----------------------------------------------------------------------------


async def create_blueprint(
    uow: DeclarationsUnitOfWork, data: BlueprintIn, now: datetime
) -> Blueprint:
    bp = Blueprint(id=str(uuid.uuid4()), created_at=now, updated_at=now, **data.model_dump())
    await uow.blueprints.add(bp)
    await recompile(uow, [bp.id], now)
    return bp


async def get_blueprint(uow: DeclarationsUnitOfWork, blueprint_id: str) -> Blueprint:
    bp = await uow.blueprints.get(blueprint_id)
    if bp is None:
        raise NotFound(f"no blueprint {blueprint_id}")
    return bp


async def update_blueprint(
    uow: DeclarationsUnitOfWork, blueprint_id: str, patch: BlueprintPatch, now: datetime
) -> Blueprint:
    bp = await get_blueprint(uow, blueprint_id)
    changes = patch.model_dump(exclude_unset=True, exclude_none=True)
    bp = bp.model_copy(update={**changes, "updated_at": now})
    await uow.blueprints.save(bp)
    return bp


async def delete_blueprint(uow: DeclarationsUnitOfWork, blueprint_id: str, now: datetime) -> None:
    """Unassign its items and publish an empty policy, so its Macs drop every declaration."""
    await get_blueprint(uow, blueprint_id)
    await uow.blueprints.lock([blueprint_id])
    await uow.blueprints.delete(blueprint_id)
    await _publish(uow, blueprint_id, [], now)


# ---- library items --------------------------------------------------------------------------


async def _validate(
    uow: DeclarationsUnitOfWork, data: LibraryItemIn, item_id: str | None
) -> list[str]:
    ve = data.version_enforcement
    if isinstance(ve, Minimum | Specific):
        wanted = parse_version(ve.version)
        same = [
            r
            for r in await uow.releases.by_major(data.major)
            if r.kind != "bsi" and parse_version(r.version) == wanted
        ]
        if not same:
            raise InvalidInput(f"macOS {ve.version} is not a release the catalog knows")
        if isinstance(ve, Specific) and all(r.listed_by_apple is False for r in same):
            raise InvalidInput(
                f"Apple no longer offers macOS {ve.version} (GDMF does not list it): a Mac "
                "could not install it; pick a version Apple still signs"
            )
    bp_ids = sorted(set(data.blueprint_ids))
    missing = set(bp_ids) - await uow.blueprints.existing_ids(bp_ids)
    if missing:
        raise InvalidInput(f"unknown blueprint ids: {sorted(missing)}")
    for bp in bp_ids:
        other = await uow.items.holder(bp, data.major, other_than=item_id)
        if other is not None:
            raise Conflict(
                f"blueprint {bp} already has a macOS {data.major} item ({other})",
                details={"blueprint_id": bp, "conflicting_item_id": other},
            )
    return bp_ids


async def create_item(
    uow: DeclarationsUnitOfWork, data: LibraryItemIn, now: datetime
) -> LibraryItem:
    await uow.releases.lock_major(data.major)
    await uow.blueprints.lock(sorted(set(data.blueprint_ids)))
    bp_ids = await _validate(uow, data, None)
    item = LibraryItem(
        id=str(uuid.uuid4()),
        upgrade_enforced_since=now if data.installation_method == "continuously_enforce" else None,
        created_at=now,
        updated_at=now,
        **{**data.model_dump(), "blueprint_ids": bp_ids},
    )
    await uow.items.add(item)
    await recompile(uow, bp_ids, now)
    return item


async def get_item(uow: DeclarationsUnitOfWork, item_id: str) -> LibraryItem:
    item = await uow.items.get(item_id)
    if item is None:
        raise NotFound(f"no library item {item_id}")
    return item


async def replace_item(
    uow: DeclarationsUnitOfWork, item_id: str, data: LibraryItemIn, now: datetime
) -> LibraryItem:
    """PUT semantics. The major is part of what an item is: changing it is refused. Switching
    upgrades on (continuously-enforce) starts the rolling upgrade window now."""
    old = await get_item(uow, item_id)
    await uow.releases.lock_major(old.major)
    await uow.blueprints.lock(sorted({*data.blueprint_ids, *old.blueprint_ids}))
    if data.major != old.major:
        raise InvalidInput(
            f"an item's major cannot change ({old.major} → {data.major}); create a new item"
        )
    bp_ids = await _validate(uow, data, item_id)
    enforcing = data.installation_method == "continuously_enforce"
    since = (old.upgrade_enforced_since or now) if enforcing else None
    item = LibraryItem(
        id=item_id,
        upgrade_enforced_since=since,
        created_at=old.created_at,
        updated_at=now,
        **{**data.model_dump(), "blueprint_ids": bp_ids},
    )
    await uow.items.save(item)
    await recompile(uow, sorted({*bp_ids, *old.blueprint_ids}), now)
    return item


async def delete_item(uow: DeclarationsUnitOfWork, item_id: str, now: datetime) -> None:
    item = await get_item(uow, item_id)
    await uow.blueprints.lock(item.blueprint_ids)
    await uow.items.delete(item_id)
    await recompile(uow, item.blueprint_ids, now)


async def request_self_service(
    uow: DeclarationsUnitOfWork,
    item_id: str,
    data: SelfServiceRequestIn,
    who: str,
    now: datetime,
) -> SelfServiceRequest:
    """One Mac's user asked to upgrade: an upgrade enforcement for that Mac only, due in
    `hours` (24 by default). The deadline is written in UTC: the server does not know the
    Mac's time zone, and the Mac reads it as local time, so it lands within a day of it."""
    item = await get_item(uow, item_id)
    if item.installation_method != "self_service":
        raise InvalidInput(
            "self-service requests are for items with installation_method 'self_service'"
        )
    if not item.blueprint_ids:
        raise InvalidInput("this item is not assigned to any blueprint")
    due = (now + timedelta(hours=data.hours)).replace(tzinfo=None, microsecond=0)
    request = SelfServiceRequest(
        id=str(uuid.uuid4()),
        item_id=item_id,
        enrollment_id=data.enrollment_id,
        requested_at=now,
        deadline=due.isoformat(),
        requested_by=who,
    )
    await uow.requests.add(request)
    await recompile(uow, item.blueprint_ids, now)
    return request


# ---- compiling ------------------------------------------------------------------------------


async def recompile(
    uow: DeclarationsUnitOfWork, blueprint_ids: Iterable[str], now: datetime
) -> int:
    """Compile these blueprints; store and publish a new revision for each one whose policy
    changed. Returns how many changed. Reads are batched and each item is compiled once,
    however many blueprints it is assigned to."""
    ids = sorted(set(blueprint_ids))
    if not ids:
        return 0
    await uow.blueprints.lock(ids)
    items_by_bp = await uow.items.for_blueprints(ids)
    items = {i.id: i for its in items_by_bp.values() for i in its}
    releases = await uow.releases.by_majors({i.major for i in items.values()})
    requests = await uow.requests.for_items(sorted(items)) if items else {}
    compiler = Compiler(releases)
    compiled: dict[str, list[dict[str, Any]]] = {
        item.id: compiler.item_docs(item, _live_requests(requests.get(item.id, [])))
        for item in items.values()
    }
    subscriptions = status_subscriptions_candidate().model_dump(mode="json")
    summaries = {item.id: _summary(item, compiler) for item in items.values()}
    policies = {
        bp: (
            [subscriptions, *(c for i in sorted(its, key=lambda i: i.id) for c in compiled[i.id])],
            [summaries[i.id] for i in sorted(its, key=lambda i: i.id)],
        )
        for bp, its in items_by_bp.items()
    }
    return await _publish_many(uow, policies, now)


def _summary(item: LibraryItem, compiler: Compiler) -> dict[str, Any]:
    """What compliance needs to know of the item (`PolicyItem`): which Macs can run its
    major (None when no release of it has a device list), whether it manages updates."""
    boards = compiler.view(item.major).boards
    return PolicyItem(
        item_id=item.id,
        label=item.label,
        major=item.major,
        mode=item.version_enforcement.mode,
        installation_method=item.installation_method,
        boards=sorted(boards) if boards else None,
    ).model_dump(mode="json")


def _live_requests(requests: list[SelfServiceRequest]) -> list[tuple[str, datetime]]:
    """A Mac's newest request replaces its older ones (all stay in the audit trail)."""
    newest = {r.enrollment_id: r for r in requests}  # oldest first, so the last one wins
    return sorted((eid, datetime.fromisoformat(r.deadline)) for eid, r in newest.items())


async def _publish(
    uow: DeclarationsUnitOfWork, blueprint_id: str, candidates: list[dict[str, Any]], now: datetime
) -> int:
    return await _publish_many(uow, {blueprint_id: (candidates, [])}, now)


async def _publish_many(
    uow: DeclarationsUnitOfWork,
    policies: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]],
    now: datetime,
) -> int:
    """Store and publish a revision for each policy (candidate documents in order, and the
    item summaries compliance reads) whose token moved."""
    latest = await uow.policies.latest_tokens(list(policies))
    revisions, events = [], []
    for bp, (docs, items) in policies.items():
        # The token covers the item summaries too, so a change only they see (an item's
        # label, a major's device list) still makes a revision compliance hears of.
        token = token_of([*docs, {"items": items}] if items else docs)
        revision, old_token = latest.get(bp, (0, None))
        if token == old_token:
            continue
        revisions.append(
            PolicyRevision.model_construct(
                blueprint_id=bp,
                revision=revision + 1,
                token=token,
                created_at=now,
                candidates=docs,
                items=items,
            )
        )
        # The event's data is the same document: PolicyPublished's fields, already dumped.
        data = {
            "blueprint_id": bp,
            "revision": revision + 1,
            "token": token,
            "candidates": docs,
            "items": items,
        }
        events.append(
            CloudEvent(type=PolicyPublished.TYPE, source=SOURCE, subject=bp, data=data, time=now)
        )
    await uow.policies.add_many(revisions)
    await uow.outbox.add_many(PolicyPublished.TOPIC, events)
    return len(revisions)


async def on_releases(
    uow: DeclarationsUnitOfWork, releases: list[ReleaseData], now: datetime
) -> int:
    """Releases appeared or changed: update the view, recompile only the blueprints with an
    item of an affected major. Returns how many policies changed."""
    for major in sorted({rel.major for rel in releases}):
        await uow.releases.lock_major(major)
    majors = {rel.major for rel in releases if await uow.releases.upsert(rel, now)}
    affected: set[str] = set()
    for major in majors:
        affected.update(await uow.items.blueprints_with_major(major))
    return await recompile(uow, affected, now)


async def on_release(uow: DeclarationsUnitOfWork, release: ReleaseData, now: datetime) -> int:
    return await on_releases(uow, [release], now)


# ---- preview --------------------------------------------------------------------------------


async def preview(uow: DeclarationsUnitOfWork, blueprint_id: str, device: PreviewIn) -> PreviewOut:
    """Exactly what a Mac with these facts would be served (the device channel's own manifest
    function over the latest revision), each declaration with the reason for it."""
    await get_blueprint(uow, blueprint_id)
    rev = await uow.policies.latest(blueprint_id)
    policy = (
        Policy(
            blueprint_id=blueprint_id,
            revision=rev.revision,
            token=rev.token,
            candidates=[Candidate.model_validate(c) for c in rev.candidates],
        )
        if rev
        else None
    )
    facts = DeviceFacts(**device.model_dump())
    manifest = build_manifest(policy, facts)
    reasons = {
        c.identifier: c.enforcement.reason
        for c in (policy.select(facts) if policy else [])
        if c.enforcement
    }
    out = []
    for decl in manifest.declarations:
        if decl.type == ddm.STATUS_SUBSCRIPTIONS:
            why = "always: the status the suite needs to judge updates"
        elif decl.type == ddm.ACTIVATION_SIMPLE:
            why = "activates the configurations above"
        else:
            why = reasons.get(decl.identifier, "")
        out.append(PreviewDeclaration(declaration=decl.to_json(), reason=why))
    return PreviewOut(
        blueprint_id=blueprint_id,
        revision=rev.revision if rev else None,
        declarations_token=manifest.token,
        declarations=out,
    )
