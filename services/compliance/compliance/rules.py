"""Compliance rules (DESIGN.md, Compliance). Pure: facts + expectation + status + now.

States: up_to_date, pending, in_progress, overdue, failed, unknown, not_managed.
(`incompatible` arrives with hardware-aware policies.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

from pydantic import BaseModel

from managed_os.events import DeclarationState, SoftwareUpdateState
from managed_os.policy import DeviceFacts, ExpectedEnforcement
from managed_os.versions import VersionError, parse_version

State = Literal[
    "up_to_date",
    "pending",
    "in_progress",
    "overdue",
    "failed",
    "incompatible",
    "unknown",
    "not_managed",
]
STATES: tuple[State, ...] = get_args(State)
# Without a known time zone, judge in the last zone to reach the deadline (UTC−12) and
# allow Apple's one-hour past-due grace.
LATEST_OFFSET = timedelta(hours=12)
PAST_DUE_GRACE = timedelta(hours=1)
IN_PROGRESS = {"downloading", "prepared", "installing"}


class DeviceRecord(BaseModel):
    enrollment_id: str
    blueprint_id: str | None
    facts: DeviceFacts
    softwareupdate: SoftwareUpdateState
    declarations: list[DeclarationState]
    expected: list[ExpectedEnforcement]
    last_report_at: datetime | None


@dataclass(frozen=True)
class Verdict:
    state: State
    reason: str
    target_version: str | None = None
    deadline: str | None = None


def overdue_at(local_deadline: str) -> datetime:
    """The UTC instant after which a device-local deadline has passed everywhere."""
    naive = datetime.fromisoformat(local_deadline)
    return naive.replace(tzinfo=UTC) + LATEST_OFFSET + PAST_DUE_GRACE


def _meets(facts: DeviceFacts, e: ExpectedEnforcement) -> bool:
    try:
        current, target = facts.version, parse_version(e.target_version)
    except VersionError:
        return False
    if current is None:
        return False
    if e.target_build and facts.effective_build == e.target_build:
        return True
    return current >= target


def evaluate(record: DeviceRecord, now: datetime, stale_after: timedelta) -> Verdict:
    if record.last_report_at is None or record.facts.version is None:
        return Verdict("unknown", "no status report yet")
    if now - record.last_report_at > stale_after:
        return Verdict("unknown", f"no status report since {record.last_report_at:%Y-%m-%d %H:%M}Z")
    if record.blueprint_id is None:
        return Verdict("not_managed", "device is not assigned to a blueprint")
    open_items = [e for e in record.expected if not _meets(record.facts, e)]
    if not open_items:
        return Verdict("up_to_date", f"on macOS {record.facts.os_version}")
    e = min(open_items, key=lambda x: x.deadline)
    su = record.softwareupdate
    invalid = [
        d for d in record.declarations if d.identifier == e.declaration_id and d.valid == "invalid"
    ]
    base = dict(target_version=e.target_version, deadline=e.deadline)
    if su.install_state == "failed" or su.failure_count > 0:
        why = (
            su.failure_reason or f"install state {su.install_state}, {su.failure_count} failure(s)"
        )
        return Verdict("failed", why, **base)
    if invalid:
        codes = ", ".join(str(r.get("code")) for r in invalid[0].reasons) or "no reason given"
        return Verdict(
            "failed", f"declaration {e.declaration_id} reported invalid: {codes}", **base
        )
    if su.install_state in IN_PROGRESS:
        return Verdict(
            "in_progress",
            f"{su.install_state} macOS {su.pending_version or e.target_version}",
            **base,
        )
    if now > overdue_at(e.deadline):
        return Verdict("overdue", f"macOS {e.target_version} was due {e.deadline} local", **base)
    return Verdict("pending", f"macOS {e.target_version} due {e.deadline} local", **base)
