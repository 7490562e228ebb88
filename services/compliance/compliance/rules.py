"""Compliance rules (DESIGN.md, Compliance). Pure: inputs + the blueprint's items + now.

A Mac is judged per managed item of its blueprint, then overall (its worst item state):
- `not_managed`: no blueprint; or the item does not manage updates (do_not_manage), or leaves
  the upgrade to this Mac's older major to the user (self-service) and none was requested;
- `unknown`: no status report yet, or none for longer than the stale window;
- `incompatible`: the Mac's board id cannot run the item's major;
- `failed`: install state `failed`, a failure count above 0, or the enforcement declaration
  reported invalid (the reason kept);
- `in_progress`: waiting / downloading / prepared / installing;
- `overdue`: the deadline passed — in the Mac's time zone when known, else in the last zone
  to reach it (UTC−12) — plus Apple's one-hour past-due grace;
- `pending`: enforced, before the deadline; `up_to_date`: nothing left to install.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field

from managed_os.events import ComplianceState, DeclarationState, SoftwareUpdateState
from managed_os.policy import DeviceFacts, ExpectedEnforcement, PolicyItem
from managed_os.versions import OSVersion, VersionError, parse_version

log = logging.getLogger(__name__)
State = ComplianceState
STATES: tuple[State, ...] = get_args(ComplianceState)
# The overall state of a Mac is its worst item state, in this order.
SEVERITY: dict[str, int] = {
    s: i
    for i, s in enumerate(
        (
            "failed",
            "overdue",
            "in_progress",
            "pending",
            "unknown",
            "incompatible",
            "up_to_date",
            "not_managed",
        )
    )
}
LATEST_OFFSET = timedelta(hours=12)  # UTC−12: the last zone to reach a local time
PAST_DUE_GRACE = timedelta(hours=1)
IN_PROGRESS = {"waiting", "downloading", "prepared", "installing"}


class DeviceInputs(BaseModel):
    """What the rules judge a Mac on, folded from device events."""

    model_config = ConfigDict(extra="ignore")

    enrollment_id: str
    blueprint_id: str | None = None
    time_zone: str | None = None
    facts: DeviceFacts
    softwareupdate: SoftwareUpdateState = Field(default_factory=SoftwareUpdateState)
    declarations: list[DeclarationState] = Field(default_factory=list)
    expected: list[ExpectedEnforcement] = Field(default_factory=list)
    last_report_at: datetime | None = None


@dataclass(frozen=True)
class Verdict:
    state: State
    reason: str
    target_version: str | None = None
    deadline: str | None = None
    due_at: datetime | None = None


@dataclass(frozen=True)
class Judgement:
    overall: Verdict
    items: dict[str, Verdict]
    next_check_at: datetime | None  # when the verdict may change with no new event


def _version(text: str) -> OSVersion | None:
    try:
        return parse_version(text)
    except VersionError:
        return None


@lru_cache(maxsize=4096)
def due_at(local_deadline: str, time_zone: str | None = None) -> datetime:
    """The UTC instant after which a device-local deadline (plus the grace) has passed: in
    the Mac's zone when known, else everywhere (UTC−12). Memoised: a fleet shares a few
    deadlines and zones, and every judgement of a pending Mac asks."""
    naive = datetime.fromisoformat(local_deadline)
    if time_zone:
        zone = _zone(time_zone)
        if zone is not None:
            return naive.replace(tzinfo=zone).astimezone(UTC) + PAST_DUE_GRACE
    return naive.replace(tzinfo=UTC) + LATEST_OFFSET + PAST_DUE_GRACE


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo | None:
    """The zone, or None when this host's time zone database does not know it (the device
    channel checked it against its own): the Mac is then judged as if no zone were known."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("unknown time zone %r; judging in UTC-12", name)
        return None


def _meets(facts: DeviceFacts, e: ExpectedEnforcement) -> bool:
    current, target = facts.version, _version(e.target_version)
    if current is None or target is None:
        return False
    if e.target_build and facts.effective_build == e.target_build:
        return True
    if e.kind == "bsi":
        # A BSI's target carries no letter: the Mac meets it only with that BSI's build (or
        # a later base version).
        return current.base > target
    return current >= target


def _judge_enforcement(inputs: DeviceInputs, open_items: list[ExpectedEnforcement]) -> Verdict:
    e = open_items[0] if len(open_items) == 1 else min(open_items, key=lambda x: x.deadline)
    su = inputs.softwareupdate
    target, deadline = e.target_version, e.deadline
    due = due_at(deadline, inputs.time_zone)
    if su.install_state == "failed" or su.failure_count > 0:
        why = su.failure_reason or "no reason given"
        reason = (
            f"install of macOS {su.pending_version or target} failed "
            f"({su.failure_count} failure(s), install state {su.install_state}): {why}"
        )
        return Verdict("failed", reason, target, deadline, due)
    for d in inputs.declarations:
        if d.identifier == e.declaration_id and d.valid == "invalid":
            codes = ", ".join(str(r.get("code")) for r in d.reasons) or "no reason given"
            reason = f"declaration {e.declaration_id} is invalid: {codes}"
            return Verdict("failed", reason, target, deadline, due)
    if su.install_state in IN_PROGRESS:
        reason = f"{su.install_state} macOS {su.pending_version or target}"
        return Verdict("in_progress", reason, target, deadline, due)
    return Verdict("pending", _pending_reason(target, deadline), target, deadline, due)


@lru_cache(maxsize=1024)
def _pending_reason(target: str, deadline: str) -> str:
    return f"macOS {target} due {deadline} local"


def judge_item(
    inputs: DeviceInputs, item: PolicyItem | None, expected: list[ExpectedEnforcement]
) -> Verdict:
    """One item, for a Mac that has reported recently (not judged overdue yet: see
    `evaluate`, which compares `due_at` with now)."""
    facts = inputs.facts
    if expected:
        open_items = [e for e in expected if not _meets(facts, e)]
        if open_items:
            return _judge_enforcement(inputs, open_items)
        return Verdict("up_to_date", f"on macOS {facts.os_version}")
    if item is None:
        return Verdict("up_to_date", f"on macOS {facts.os_version}")
    version = facts.version
    major = version.major if version is not None else None
    if item.mode == "do_not_manage" and (major is None or major <= item.major):
        return Verdict("not_managed", f"item {item.label or item.item_id} does not manage updates")
    if major is not None and major > item.major:
        return Verdict("up_to_date", f"on macOS {facts.os_version}, newer than macOS {item.major}")
    if not item.runs_on(facts.device_id):
        what = facts.model_identifier or facts.device_id
        return Verdict("incompatible", f"{what} ({facts.device_id}) cannot run macOS {item.major}")
    if major is not None and major < item.major and item.installation_method == "self_service":
        return Verdict(
            "not_managed", f"the upgrade to macOS {item.major} is self-service on this Mac"
        )
    return Verdict("up_to_date", f"on macOS {facts.os_version}")


def evaluate(
    inputs: DeviceInputs,
    items: Sequence[PolicyItem] | None,
    now: datetime,
    stale_after: timedelta,
) -> Judgement:
    """Judge a Mac at `now`, per item of its blueprint (`items`: None when the blueprint's
    policy has not been seen yet — then only the enforcements the Mac was sent count)."""
    if inputs.blueprint_id is None:
        return Judgement(Verdict("not_managed", "not assigned to a blueprint"), {}, None)
    by_item: dict[str, list[ExpectedEnforcement]] = {}
    for e in inputs.expected:
        by_item.setdefault(e.item_id, []).append(e)
    known = {i.item_id: i for i in items or ()}
    item_ids = sorted(set(known) | set(by_item))
    if inputs.last_report_at is None or inputs.facts.version is None:
        unknown = Verdict("unknown", "no status report yet")
        return Judgement(unknown, dict.fromkeys(item_ids, unknown), None)
    stale_at = inputs.last_report_at + stale_after
    if now >= stale_at:
        unknown = Verdict(
            "unknown", f"no status report since {inputs.last_report_at:%Y-%m-%d %H:%M}Z"
        )
        return Judgement(unknown, dict.fromkeys(item_ids, unknown), None)
    verdicts: dict[str, Verdict] = {}
    next_check: datetime = stale_at
    for item_id in item_ids:
        v = judge_item(inputs, known.get(item_id), by_item.get(item_id, []))
        due = v.due_at
        if v.state == "pending" and due is not None:
            if now >= due:
                v = Verdict(
                    "overdue",
                    f"macOS {v.target_version} was due {v.deadline} local",
                    v.target_version,
                    v.deadline,
                    due,
                )
            else:
                next_check = min(next_check, due)
        verdicts[item_id] = v
    if not verdicts:
        return Judgement(
            Verdict("up_to_date", f"on macOS {inputs.facts.os_version}"), {}, next_check
        )
    if len(verdicts) == 1:
        (worst,) = verdicts.values()
    else:
        worst = min(verdicts.values(), key=lambda v: SEVERITY[v.state])
    return Judgement(worst, verdicts, next_check)
