"""Compliance states at pinned times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from compliance.rules import DeviceRecord, evaluate, overdue_at
from managed_os.events import DeclarationState, SoftwareUpdateState
from managed_os.policy import DeviceFacts, ExpectedEnforcement

STALE = timedelta(hours=72)
REPORTED = datetime(2026, 8, 25, 12, 0, tzinfo=UTC)
ENFORCE = ExpectedEnforcement(
    item_id="i1",
    declaration_id="managed-os.i1.minimum",
    kind="update",
    target_version="26.6.2",
    deadline="2026-09-01T17:00:00",
)


def record(version: str | None = "26.4.1", expected=(ENFORCE,), **su) -> DeviceRecord:
    return DeviceRecord(
        enrollment_id="MAC-1",
        blueprint_id="bp",
        facts=DeviceFacts(enrollment_id="MAC-1", os_version=version),
        softwareupdate=SoftwareUpdateState(**su),
        declarations=[],
        expected=list(expected),
        last_report_at=REPORTED if version else None,
    )


def test_a_deadline_is_overdue_only_once_it_has_passed_in_utc_minus_12_plus_an_hour():
    assert overdue_at("2026-09-01T17:00:00") == datetime(2026, 9, 2, 6, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("rec", "now", "state"),
    [
        (record(), REPORTED, "pending"),
        (record(), REPORTED + timedelta(hours=71), "pending"),
        (record(), datetime(2026, 9, 2, 6, 1, tzinfo=UTC), "unknown"),  # silent > 72 h
        (record(version=None), REPORTED, "unknown"),
        (record(version="26.6.2", expected=()), REPORTED, "up_to_date"),
        (record(version="26.6.2"), REPORTED, "up_to_date"),  # reached target before manifest moved
        (record(install_state="downloading"), REPORTED, "in_progress"),
        (record(install_state="failed"), REPORTED, "failed"),
        (record(failure_count=2, failure_reason="not enough space"), REPORTED, "failed"),
    ],
)
def test_states(rec, now, state):
    assert evaluate(rec, now, STALE).state == state


def test_overdue_when_the_device_keeps_reporting_after_the_deadline():
    rec = record().model_copy(update={"last_report_at": datetime(2026, 9, 2, 5, tzinfo=UTC)})
    assert evaluate(rec, datetime(2026, 9, 2, 5, 59, tzinfo=UTC), STALE).state == "pending"
    verdict = evaluate(rec, datetime(2026, 9, 2, 6, 1, tzinfo=UTC), STALE)
    assert verdict.state == "overdue"
    assert verdict.target_version == "26.6.2"


def test_a_declaration_the_device_reports_invalid_is_a_failure_with_its_reason():
    rec = record().model_copy(
        update={
            "declarations": [
                DeclarationState(
                    category="configuration",
                    identifier="managed-os.i1.minimum",
                    valid="invalid",
                    reasons=[{"code": "Error.ConfigurationCannotBeApplied"}],
                )
            ]
        }
    )
    verdict = evaluate(rec, REPORTED, STALE)
    assert verdict.state == "failed"
    assert "Error.ConfigurationCannotBeApplied" in verdict.reason


def test_a_device_without_a_blueprint_is_not_managed():
    rec = record().model_copy(update={"blueprint_id": None})
    assert evaluate(rec, REPORTED, STALE).state == "not_managed"
