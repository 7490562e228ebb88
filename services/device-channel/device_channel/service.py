"""Device-channel use cases: registry, manifests, status ingestion, policy updates."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from device_channel.repository import (
    Device,
    DeviceChannelUnitOfWork,
    StatusBatchStore,
    StatusPlan,
    sync_fields,
)
from device_channel.state import DeviceChannelState
from device_channel.sync_cache import DEVICE, Key
from managed_os import ddm
from managed_os.cloudevents import CloudEvent
from managed_os.errors import MalformedRequest, NotFound
from managed_os.events import (
    DeclarationState,
    DeviceManifestChanged,
    DeviceRegistered,
    DeviceStatusReported,
    DeviceUnenrolled,
    SoftwareUpdateState,
    to_event,
)
from managed_os.manifest import Manifest, ManifestMemo, build_manifest
from managed_os.policy import DeviceFacts, Policy

SOURCE = "/managed-os/device-channel"


def facts_from_status(enrollment_id: str, status: ddm.StatusView) -> DeviceFacts:
    def text(value: object) -> str | None:
        return str(value) if value is not None else None

    return DeviceFacts(
        enrollment_id=enrollment_id,
        os_version=text(status.os_version),
        build_version=text(status.build_version),
        supplemental_build_version=text(status.supplemental_build_version),
        supplemental_extra_version=status.supplemental_extra_version,
        device_id=status.softwareupdate_device_id,
        model_identifier=status.model_identifier,
    )


def softwareupdate_state(status: ddm.StatusView) -> SoftwareUpdateState:
    pending, failure, reason = status.pending_version, status.failure_reason, status.install_reason
    return SoftwareUpdateState(
        install_state=status.install_state,
        pending_version=str(pending.os_version) if pending and pending.os_version else None,
        pending_build=str(pending.build_version) if pending and pending.build_version else None,
        pending_deadline=pending.target_local_datetime if pending else None,
        failure_count=failure.count if failure else 0,
        failure_reason=failure.reason if failure else None,
        install_reasons=list(reason.reasons) if reason else [],
    )


def declaration_states(status: ddm.StatusView) -> list[DeclarationState]:
    return [
        DeclarationState(
            category=d.category.value,
            identifier=d.identifier,
            server_token=d.server_token,
            active=d.active,
            valid=d.valid,
            reasons=[{"code": r.code, "description": r.description} for r in d.reasons],
        )
        for d in status.declarations or ()
    ]


async def device_for_sync(
    uow: DeviceChannelUnitOfWork, enrollment_id: str, now: datetime
) -> Device:
    """The device record, created on first contact (unassigned until an admin assigns it),
    held for update until the caller commits. Two first contacts of one Mac at once (a sync
    and a status report right after a push) both succeed: the second finds the first's row."""
    device = await uow.devices.get(enrollment_id, for_update=True)
    if device is None:
        device = Device(
            enrollment_id=enrollment_id,
            facts=DeviceFacts(enrollment_id=enrollment_id),
            status={},
            declarations_token=build_manifest(None, DeviceFacts(enrollment_id=enrollment_id)).token,
            manifest_changed_at=now,
            created_at=now,
            updated_at=now,
        )
        if not await uow.devices.add(device):
            found = await uow.devices.get(enrollment_id, for_update=True)
            assert found is not None  # inserted by a concurrent transaction, now committed
            device = found
    return device


async def manifest_for(
    uow: DeviceChannelUnitOfWork, device: Device, user_channel: bool = False
) -> Manifest:
    """From the stored policy (not the sync cache: a writer must compute from the latest)."""
    return uow.state.manifests.get(
        await uow.policies.get(device.blueprint_id), device.facts, user_channel=user_channel
    )


async def register(
    uow: DeviceChannelUnitOfWork, enrollment_id: str, changes: dict[str, Any], now: datetime
) -> Device:
    """Create or update a device record; only the fields in `changes` are touched
    (`blueprint_id: None` unassigns the device)."""
    device = await device_for_sync(uow, enrollment_id, now)
    device = device.model_copy(update={**changes, "updated_at": now})
    device, _ = await _refresh(uow, device, now)
    registered = DeviceRegistered(
        enrollment_id=enrollment_id,
        blueprint_id=device.blueprint_id,
        serial_number=device.serial_number,
        model=device.model,
        time_zone=device.time_zone,
        changed_at=now,
    )
    await uow.outbox.add(
        registered.TOPIC, to_event(registered, source=SOURCE, subject=enrollment_id, time=now)
    )
    return device


def parse_report(body: bytes | str) -> ddm.StatusReport:
    """Parse a status report and read every typed item once, so a malformed one is refused
    (400) before anything is stored."""
    try:
        report = ddm.parse_status_report(body)
        _validate(report)
    except ddm.DDMProtocolError as exc:
        raise MalformedRequest(f"invalid status report: {exc}") from exc
    return report


async def ingest_status(
    uow: DeviceChannelUnitOfWork, enrollment_id: str, body: bytes | str, now: datetime
) -> Device:
    """Validate, merge (or replace on FullReport), update facts, emit DeviceStatusReported."""
    devices = await ingest_statuses(uow, [(enrollment_id, parse_report(body))], now)
    return devices[enrollment_id]


async def ingest_statuses(
    uow: DeviceChannelUnitOfWork, reports: Sequence[tuple[str, ddm.StatusReport]], now: datetime
) -> dict[str, Device]:
    """Parsed reports applied in order in the caller's transaction: the same rows, pushes and
    events as one `ingest_status` each. The devices are locked in id order, as a policy
    refresh locks them, before the policies are read."""
    ids = sorted({eid for eid, _ in reports})
    devices = await uow.devices.get_many(ids, for_update=True)
    for eid in ids:
        if eid not in devices:
            devices[eid] = await device_for_sync(uow, eid, now)
    policies = {bp: await uow.policies.get(bp) for bp in {d.blueprint_id for d in devices.values()}}
    plan = plan_statuses(uow.state.manifests, devices, policies, reports, now)
    await uow.devices.save_many([plan.devices[eid] for eid in ids])
    for eid, token in plan.pushes.items():
        await uow.pushes.queue(eid, token, now)
    for topic, group in itertools.groupby(plan.events, key=lambda e: e[0]):
        await uow.outbox.add_many(topic, [event for _, event in group])
    return plan.devices


def plan_statuses(
    manifests: ManifestMemo,
    devices: Mapping[str, Device],
    policies: Mapping[str | None, Policy | None],
    reports: Sequence[tuple[str, ddm.StatusReport]],
    now: datetime,
) -> StatusPlan:
    """Merge each report (in order) into its device as read, recompute its manifest and say
    what to store and publish. Pure: the two ways of storing a batch (`ingest_statuses` under
    row locks, `ingest_statuses_unlocked` checked against row versions) share it."""
    plan = StatusPlan(dict(devices), [], {})
    for eid, report in reports:
        merged = ddm.StatusView(ddm.merge_status(plan.devices[eid].status, report))
        before = plan.devices[eid]
        device = before.model_copy(
            update={
                "status": dict(merged.items),
                "facts": before.facts if keeps_facts(report) else facts_from_status(eid, merged),
                "last_report_at": now,
                "updated_at": now,
            }
        )
        manifest = manifests.get(policies[device.blueprint_id], device.facts)
        if manifest.token != device.declarations_token:
            device = device.model_copy(
                update={"declarations_token": manifest.token, "manifest_changed_at": now}
            )
            plan.pushes[eid] = manifest.token
            plan.events.append(_manifest_changed(device, manifest, now))
        plan.devices[eid] = device
        payload = DeviceStatusReported(
            enrollment_id=eid,
            blueprint_id=device.blueprint_id,
            reported_at=now,
            full_report=report.full_report,
            facts=device.facts,
            softwareupdate=softwareupdate_state(merged),
            declarations=declaration_states(merged),
            expected=list(manifest.expected),
        )
        plan.events.append((payload.TOPIC, to_event(payload, source=SOURCE, subject=eid, time=now)))
    return plan


def keeps_facts(report: ddm.StatusReport) -> bool:
    """Whether the device's facts stay as they were after `report`: an incremental report that
    carries no `device` item and no `softwareupdate.device-id` (most: install state, declaration
    status) changes none of what `facts_from_status` reads."""
    if report.full_report:
        return False
    items = report.items
    update = items.get("softwareupdate")
    return "device" not in items and (
        "softwareupdate" not in items or (isinstance(update, Mapping) and "device-id" not in update)
    )


async def ingest_statuses_unlocked(
    store: StatusBatchStore,
    state: DeviceChannelState,
    reports: Sequence[tuple[str, ddm.StatusReport]],
    now: datetime,
    stored: set[str],
    changed: set[Key],
    attempts: int = 3,
) -> None:
    """The batch in two statements and no explicit transaction (PostgreSQL): read the devices
    and their policies' tokens in one snapshot, plan, then write every device whose row is
    still the version read, with its events and pushes, in one statement. A device some other
    writer changed meanwhile (a policy refresh rewrites every device of its blueprint, so a
    changed policy shows as a changed row too) is read and planned again, up to `attempts`
    times. Fills `stored` with the devices whose reports it stored and `changed` with the
    sync-cache keys those writes changed, as each write returns (so a failure after one still
    says what it stored). The rest is for the locked path: first contacts, a policy this
    process has not parsed yet, a device that kept changing."""
    todo = list(reports)
    for _ in range(attempts):
        if not todo:
            return
        ids = sorted({eid for eid, _ in todo})
        rows = await store.read(ids)
        policies: dict[str | None, Policy | None] = {None: None}
        for row in rows.values():
            bp, token = row.device.blueprint_id, row.policy_token
            if bp is not None and bp not in policies:
                policies[bp] = state.policies.get(bp, token) if token is not None else None
        if len(rows) < len(ids) or any(
            row.policy_token is not None and policies[row.device.blueprint_id] is None
            for row in rows.values()
        ):
            return
        plan = plan_statuses(
            state.manifests, {eid: row.device for eid, row in rows.items()}, policies, todo, now
        )
        written = await store.write(plan, rows, now)
        stored |= written
        changed |= {
            (DEVICE, eid)
            for eid in written
            if sync_fields(plan.devices[eid]) != sync_fields(rows[eid].device)
        }
        todo = [(eid, report) for eid, report in todo if eid not in written]


def _validate(report: ddm.StatusReport) -> None:
    """Read every typed item once so a malformed value is refused before it is stored."""
    facts_from_status("validation", report)
    softwareupdate_state(report)
    declaration_states(report)


async def _refresh(
    uow: DeviceChannelUnitOfWork, device: Device, now: datetime
) -> tuple[Device, Manifest]:
    """Save the device; if its manifest token moved, record it and emit DeviceManifestChanged."""
    manifest = await manifest_for(uow, device)
    changed = manifest.token != device.declarations_token
    if changed:
        device = device.model_copy(
            update={"declarations_token": manifest.token, "manifest_changed_at": now}
        )
    await uow.devices.save(device)
    if changed:
        # The Mac learns of it by a push; queued in this transaction, sent by `push.run`.
        await uow.pushes.queue(device.enrollment_id, manifest.token, now)
        await uow.outbox.add(*_manifest_changed(device, manifest, now))
    return device, manifest


def _manifest_changed(device: Device, manifest: Manifest, now: datetime) -> tuple[str, CloudEvent]:
    payload = DeviceManifestChanged(
        enrollment_id=device.enrollment_id,
        blueprint_id=device.blueprint_id,
        declarations_token=manifest.token,
        changed_at=now,
        facts=device.facts,
        expected=list(manifest.expected),
    )
    return payload.TOPIC, to_event(payload, source=SOURCE, subject=device.enrollment_id, time=now)


async def on_policy(uow: DeviceChannelUnitOfWork, policy: Policy, now: datetime) -> int:
    """Store a newer policy and refresh its devices; 0 if the stored one is as new."""
    if not await uow.policies.put(policy, now):
        return 0
    for device in await uow.devices.on_blueprint(policy.blueprint_id):
        await _refresh(uow, device, now)
    return 1


async def unenroll(uow: DeviceChannelUnitOfWork, enrollment_id: str, now: datetime) -> None:
    """Forget the Mac: its record, facts, status and pending push. Compliance hears of it
    (DeviceUnenrolled); a later DDM request starts it over as an unassigned device."""
    await get_device(uow, enrollment_id)
    await uow.devices.delete(enrollment_id)
    await uow.pushes.cancel(enrollment_id)
    payload = DeviceUnenrolled(enrollment_id=enrollment_id, unenrolled_at=now)
    await uow.outbox.add(
        payload.TOPIC, to_event(payload, source=SOURCE, subject=enrollment_id, time=now)
    )


async def get_device(uow: DeviceChannelUnitOfWork, enrollment_id: str) -> Device:
    device = await uow.devices.get(enrollment_id)
    if device is None:
        raise NotFound(f"no device {enrollment_id}")
    return device
