"""Compliance states at pinned times: one table of cases, then the time-zone edges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from compliance.rules import DeviceInputs, due_at, evaluate
from managed_os.events import DeclarationState, SoftwareUpdateState
from managed_os.policy import DeviceFacts, ExpectedEnforcement, PolicyItem

STALE = timedelta(hours=72)
REPORTED = datetime(2026, 8, 31, 12, 0, tzinfo=UTC)
DEADLINE = "2026-09-01T17:00:00"  # local; passes everywhere at 2026-09-02 05:00Z (+1 h grace)
EVERYWHERE = datetime(2026, 9, 2, 6, 0, tzinfo=UTC)
ITEM = PolicyItem(
    item_id="i26",
    label="macOS 26",
    major=26,
    mode="minimum",
    installation_method="continuously_enforce",
    boards=["J313AP", "J314sAP", "Mac-AA95B1DDAB278B95"],
)
ENFORCE = ExpectedEnforcement(
    item_id="i26",
    declaration_id="managed-os.i26.u.aaaaaaaaaaaa",
    kind="update",
    target_version="26.6.2",
    target_build="25G200",
    deadline=DEADLINE,
)
BSI = ExpectedEnforcement(
    item_id="i26",
    declaration_id="managed-os.i26.b.bbbbbbbbbbbb",
    kind="bsi",
    target_version="26.6.2",
    target_build="25G200a",
    deadline=DEADLINE,
)


def mac(
    version: str | None = "26.4.1",
    *,
    board: str | None = "J313AP",
    expected: tuple[ExpectedEnforcement, ...] = (ENFORCE,),
    blueprint: str | None = "bp",
    reported: datetime | None = REPORTED,
    tz: str | None = None,
    build: str | None = None,
    supplemental: str | None = None,
    declarations: tuple[DeclarationState, ...] = (),
    **su: Any,
) -> DeviceInputs:
    return DeviceInputs(
        enrollment_id="MAC-1",
        blueprint_id=blueprint,
        time_zone=tz,
        facts=DeviceFacts(
            enrollment_id="MAC-1",
            os_version=version,
            build_version=build,
            supplemental_build_version=supplemental,
            device_id=board,
            model_identifier="Mac14,2",
        ),
        softwareupdate=SoftwareUpdateState(**su),
        declarations=list(declarations),
        expected=list(expected),
        last_report_at=reported if version else None,
    )


def item(**changes: Any) -> PolicyItem:
    return ITEM.model_copy(update=changes)


INVALID = DeclarationState(
    category="configuration",
    identifier=ENFORCE.declaration_id,
    valid="invalid",
    reasons=[{"code": "Error.ConfigurationCannotBeApplied", "description": "…"}],
)

# (case, inputs, items of the blueprint, now, overall state, reason fragment)
CASES: list[tuple[str, DeviceInputs, list[PolicyItem] | None, datetime, str, str]] = [
    ("enforced, before the deadline", mac(), [ITEM], REPORTED, "pending", "26.6.2 due"),
    ("not in a blueprint", mac(blueprint=None), [ITEM], REPORTED, "not_managed", "blueprint"),
    ("never reported", mac(version=None), [ITEM], REPORTED, "unknown", "no status report yet"),
    (
        "silent past the window",
        mac(),
        [ITEM],
        REPORTED + STALE,
        "unknown",
        "no status report since",
    ),
    ("reached the target", mac("26.6.2"), [ITEM], REPORTED, "up_to_date", "26.6.2"),
    ("target build matches", mac("26.6.2", build="25G200"), [ITEM], REPORTED, "up_to_date", ""),
    ("no enforcement left", mac("26.6.2", expected=()), [ITEM], REPORTED, "up_to_date", ""),
    ("waiting", mac(install_state="waiting"), [ITEM], REPORTED, "in_progress", "waiting"),
    ("downloading", mac(install_state="downloading"), [ITEM], REPORTED, "in_progress", ""),
    ("prepared", mac(install_state="prepared"), [ITEM], REPORTED, "in_progress", ""),
    (
        "installing",
        mac(install_state="installing", pending_version="26.6.2"),
        [ITEM],
        REPORTED,
        "in_progress",
        "installing macOS 26.6.2",
    ),
    (
        "installing after the deadline",
        mac(install_state="installing"),
        [ITEM],
        EVERYWHERE,
        "in_progress",
        "",
    ),
    (
        "install state failed",
        mac(install_state="failed"),
        [ITEM],
        REPORTED,
        "failed",
        "install state failed",
    ),
    (
        "Apple's failure reason kept",
        mac(failure_count=2, failure_reason="Not enough free disk space"),
        [ITEM],
        REPORTED,
        "failed",
        "Not enough free disk space",
    ),
    (
        "failure count without a reason",
        mac(failure_count=1),
        [ITEM],
        REPORTED,
        "failed",
        "no reason given",
    ),
    ("failure beats overdue", mac(install_state="failed"), [ITEM], EVERYWHERE, "failed", ""),
    (
        "enforcement declaration invalid",
        mac(declarations=(INVALID,)),
        [ITEM],
        REPORTED,
        "failed",
        "Error.ConfigurationCannotBeApplied",
    ),
    ("deadline passed everywhere", mac(), [ITEM], EVERYWHERE, "overdue", "was due"),
    (
        "a minute before it passes everywhere",
        mac(),
        [ITEM],
        EVERYWHERE - timedelta(minutes=1),
        "pending",
        "",
    ),
    (
        "board cannot run the major",
        mac("15.7.1", board="Mac-7BA5B2DFE22DDD8C", expected=()),
        [ITEM],
        REPORTED,
        "incompatible",
        "cannot run macOS 26",
    ),
    (
        "unknown board: assumed supported",
        mac("15.7.1", board=None, expected=()),
        [ITEM],
        REPORTED,
        "up_to_date",
        "",
    ),
    (
        "major's device list unknown",
        mac("15.7.1", board="Mac-X", expected=()),
        [item(boards=None)],
        REPORTED,
        "up_to_date",
        "",
    ),
    (
        "older major, self-service",
        mac("15.7.1", expected=()),
        [item(installation_method="self_service")],
        REPORTED,
        "not_managed",
        "self-service",
    ),
    (
        "do not manage",
        mac("26.1", expected=()),
        [item(mode="do_not_manage")],
        REPORTED,
        "not_managed",
        "does not manage",
    ),
    (
        "newer major than the item",
        mac("26.1", expected=()),
        [item(major=15, boards=None)],
        REPORTED,
        "up_to_date",
        "newer than macOS 15",
    ),
    ("policy not seen yet: enforcement alone", mac(), None, REPORTED, "pending", ""),
    (
        "BSI not installed yet",
        mac("26.6.2", build="25G200", expected=(BSI,)),
        [ITEM],
        REPORTED,
        "pending",
        "",
    ),
    (
        "BSI installed",
        mac("26.6.2", build="25G200", supplemental="25G200a", expected=(BSI,)),
        [ITEM],
        REPORTED,
        "up_to_date",
        "",
    ),
    (
        "BSI superseded by a newer patch",
        mac("26.6.3", expected=(BSI,)),
        [ITEM],
        REPORTED,
        "up_to_date",
        "",
    ),
]


@pytest.mark.parametrize(
    ("inputs", "items", "now", "state", "reason"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_state_rules(inputs, items, now, state, reason):
    verdict = evaluate(inputs, items, now, STALE).overall
    assert verdict.state == state
    assert reason in verdict.reason


def test_overdue_and_pending_carry_the_target_and_deadline():
    verdict = evaluate(mac(), [ITEM], EVERYWHERE, STALE).overall
    assert (verdict.target_version, verdict.deadline) == ("26.6.2", DEADLINE)
    assert verdict.due_at == EVERYWHERE


@pytest.mark.parametrize(
    ("tz", "passes_at"),
    [
        # Unknown zone: the last place on Earth to reach 17:00 is UTC−12, then one hour's grace.
        (None, datetime(2026, 9, 2, 6, 0, tzinfo=UTC)),
        # Known zones: local 17:00 + 1 h, in that zone's offset on that date (summer time).
        ("Europe/Paris", datetime(2026, 9, 1, 16, 0, tzinfo=UTC)),
        ("America/Los_Angeles", datetime(2026, 9, 2, 1, 0, tzinfo=UTC)),
        ("Pacific/Kiritimati", datetime(2026, 9, 1, 4, 0, tzinfo=UTC)),  # UTC+14
        ("Pacific/Pago_Pago", datetime(2026, 9, 2, 5, 0, tzinfo=UTC)),  # UTC−11
    ],
)
def test_the_deadline_passes_in_the_macs_zone_or_in_the_last_zone(tz, passes_at):
    assert due_at(DEADLINE, tz) == passes_at
    inputs = mac(tz=tz)
    just_before = passes_at - timedelta(seconds=1)
    assert evaluate(inputs, [ITEM], just_before, STALE).overall.state == "pending"
    assert evaluate(inputs, [ITEM], passes_at, STALE).overall.state == "overdue"


def test_a_deadline_across_a_daylight_saving_change_uses_that_days_offset():
    # 2026-10-25 Europe/Paris leaves summer time at 03:00 local: 17:00 that day is UTC+1.
    assert due_at("2026-10-25T17:00:00", "Europe/Paris") == datetime(2026, 10, 25, 17, tzinfo=UTC)
    assert due_at("2026-10-24T17:00:00", "Europe/Paris") == datetime(2026, 10, 24, 16, tzinfo=UTC)


def test_next_check_is_the_earliest_of_the_deadline_and_the_stale_window():
    assert evaluate(mac(), [ITEM], REPORTED, STALE).next_check_at == EVERYWHERE
    early = datetime(2026, 8, 25, tzinfo=UTC)  # falls silent (Aug 28) before the deadline
    assert evaluate(mac(reported=early), [ITEM], early, STALE).next_check_at == early + STALE
    assert evaluate(mac(version=None), [ITEM], REPORTED, STALE).next_check_at is None


def test_each_item_is_judged_and_the_mac_takes_the_worst():
    other = PolicyItem(
        item_id="i15", major=15, mode="minimum", installation_method="continuously_enforce"
    )
    j = evaluate(mac(), [ITEM, other], EVERYWHERE, STALE)
    assert {k: v.state for k, v in j.items.items()} == {"i26": "overdue", "i15": "up_to_date"}
    assert j.overall.state == "overdue"
