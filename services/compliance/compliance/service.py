"""Compliance use cases: fold device events into records; judge them at read time."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from compliance.repository import ComplianceUnitOfWork
from compliance.rules import STATES, DeviceRecord, evaluate
from managed_os.events import DeviceManifestChanged, DeviceStatusReported, SoftwareUpdateState


async def on_status(uow: ComplianceUnitOfWork, event: DeviceStatusReported, now: datetime) -> None:
    record = DeviceRecord(
        enrollment_id=event.enrollment_id,
        blueprint_id=event.blueprint_id,
        facts=event.facts,
        softwareupdate=event.softwareupdate,
        declarations=event.declarations,
        expected=event.expected,
        last_report_at=event.reported_at,
    )
    await uow.devices.put(record, now)


async def on_manifest(
    uow: ComplianceUnitOfWork, event: DeviceManifestChanged, now: datetime
) -> None:
    old = await uow.devices.get(event.enrollment_id)
    record = DeviceRecord(
        enrollment_id=event.enrollment_id,
        blueprint_id=event.blueprint_id,
        facts=event.facts,
        softwareupdate=old.softwareupdate if old else SoftwareUpdateState(),
        declarations=old.declarations if old else [],
        expected=event.expected,
        last_report_at=old.last_report_at if old else None,
    )
    await uow.devices.put(record, now)


def judged(record: DeviceRecord, now: datetime, stale: timedelta) -> dict[str, Any]:
    verdict = evaluate(record, now, stale)
    return {
        "enrollment_id": record.enrollment_id,
        "blueprint_id": record.blueprint_id,
        "state": verdict.state,
        "reason": verdict.reason,
        "os_version": record.facts.os_version,
        "build_version": record.facts.build_version,
        "target_version": verdict.target_version,
        "deadline": verdict.deadline,
        "last_report_at": record.last_report_at,
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    counts = Counter(r["state"] for r in rows)
    total = len(rows)
    return {
        "total": total,
        "counts": {s: counts.get(s, 0) for s in STATES},
        "percent_up_to_date": round(100 * counts.get("up_to_date", 0) / total, 1)
        if total
        else None,
        "versions": dict(Counter(r["os_version"] or "unknown" for r in rows).most_common()),
    }
