"""Status reports: parsing, typed items, flattening and merging (managed_os.ddm status/merge)."""

import json
from pathlib import Path

import pytest

from managed_os.ddm import (
    INSTALL_STATES,
    KNOWN_ITEMS,
    Category,
    DDMProtocolError,
    DeclarationStatus,
    FailureReason,
    InstallReason,
    PendingVersion,
    StatusError,
    StatusReason,
    StatusView,
    flatten_status,
    merge_status,
    parse_status_report,
    unflatten_status,
)
from managed_os.ddm.status_values import parse_reason
from managed_os.versions import Build, OSVersion

STATUS = Path(__file__).resolve().parent.parent / "data" / "apple" / "declarative" / "status"


def apple_item(name: str) -> dict:
    return json.loads((STATUS / name / "example1.json").read_text())


def report_of(items: dict, full: bool = False) -> bytes:
    return json.dumps({"StatusItems": items, "Errors": [], "FullReport": full}).encode()


@pytest.mark.parametrize(
    ("item", "accessor", "expected"),
    [
        ("device.operating-system.version", "os_version", OSVersion(27, 0)),
        ("device.operating-system.build-version", "build_version", Build(24, "A", 346)),
        (
            "device.operating-system.supplemental.build-version",
            "supplemental_build_version",
            Build(24, "A", 346, "a"),
        ),
        ("device.operating-system.supplemental.extra-version", "supplemental_extra_version", "a"),
        ("device.model.identifier", "model_identifier", "iPhone14,5"),
        ("softwareupdate.device-id", "softwareupdate_device_id", "iPhone14,3"),
        ("softwareupdate.install-state", "install_state", "none"),
        ("softwareupdate.beta-enrollment", "beta_enrollment", ""),
        (
            "softwareupdate.pending-version",
            "pending_version",
            PendingVersion(OSVersion(27, 1), Build(24, "B", 32)),
        ),
        ("softwareupdate.failure-reason", "failure_reason", FailureReason(count=0)),
        (
            "softwareupdate.install-reason",
            "install_reason",
            InstallReason(("declaration",), "com.example.softwareupdate-config"),
        ),
        (
            "management.declarations",
            "declarations",
            (
                DeclarationStatus(
                    Category.ACTIVATION,
                    "com.example.activation.main",
                    "A1B2C3D4-E5F6-7890-ABCD-EF1234567890",
                    active=True,
                    valid="valid",
                ),
                DeclarationStatus(
                    Category.CONFIGURATION,
                    "com.example.config.passcode",
                    "B2C3D4E5-F6A7-8901-BCDE-F01234567891",
                    active=True,
                    valid="valid",
                ),
            ),
        ),
    ],
)
def test_each_apple_status_example_yields_its_typed_value(item, accessor, expected):
    report = parse_status_report(report_of(apple_item(item)))
    assert getattr(report, accessor) == expected
    assert item in KNOWN_ITEMS


def test_absent_items_read_as_none():
    report = parse_status_report(report_of({}))
    assert report.os_version is None
    assert report.pending_version is None
    assert report.declarations is None
    assert report.install_state is None


def test_the_installed_version_combines_the_version_with_the_bsi_letter():
    items = {
        "device": {
            "operating-system": {
                "version": "26.3.1",
                "build-version": "25D771280a",
                "supplemental": {"extra-version": "a", "build-version": "25D771280a"},
            }
        }
    }
    view = StatusView(items)
    assert view.os_version == OSVersion(26, 3, 1)
    assert view.installed_version == OSVersion(26, 3, 1, "a")
    no_bsi = StatusView(
        {
            "device": {
                "operating-system": {"version": "26.3.1", "supplemental": {"extra-version": ""}}
            }
        }
    )
    assert no_bsi.installed_version == OSVersion(26, 3, 1)


def test_nothing_pending_is_reported_as_empty_strings_and_read_as_none():
    items = {"softwareupdate": {"pending-version": {"os-version": "", "build-version": ""}}}
    pending = StatusView(items).pending_version
    assert pending == PendingVersion(None, None, None)
    assert pending is not None and not pending.is_pending


def test_an_enforced_pending_update_carries_its_deadline_and_bsi():
    items = {
        "softwareupdate": {
            "pending-version": {
                "os-version": "26.3.1 (a)",
                "build-version": "25D771280a",
                "target-local-date-time": "2026-04-01T09:30:00",
            }
        }
    }
    pending = StatusView(items).pending_version
    assert pending == PendingVersion(
        OSVersion(26, 3, 1, "a"), Build(25, "D", 771280, "a"), "2026-04-01T09:30:00"
    )
    assert pending.is_pending


def test_an_unknown_install_state_such_as_waiting_is_kept_as_text():
    assert StatusView({"softwareupdate": {"install-state": "waiting"}}).install_state == "waiting"
    assert "waiting" in INSTALL_STATES
    assert (
        StatusView({"softwareupdate": {"install-state": "pondering"}}).install_state == "pondering"
    )


def test_a_failed_update_reports_count_reason_and_time():
    items = {
        "softwareupdate": {
            "failure-reason": {
                "count": 2,
                "reason": "Not enough space",
                "timestamp": "2026-04-01T10:00:00Z",
            }
        }
    }
    assert StatusView(items).failure_reason == FailureReason(
        2, "Not enough space", "2026-04-01T10:00:00Z"
    )


def test_an_invalid_declaration_reports_its_reasons():
    items = {
        "management": {
            "declarations": {
                "configurations": [
                    {
                        "identifier": "cfg-su",
                        "server-token": "t1",
                        "active": False,
                        "valid": "invalid",
                        "reasons": [
                            {
                                "code": "Error.ConfigurationCannotBeApplied",
                                "details": {"Identifier": "cfg-su"},
                            }
                        ],
                    }
                ]
            }
        }
    }
    (status,) = StatusView(items).declarations or ()
    assert status.category is Category.CONFIGURATION
    assert status.valid == "invalid" and not status.active
    assert status.reasons == (
        StatusReason("Error.ConfigurationCannotBeApplied", None, {"Identifier": "cfg-su"}),
    )


def test_apples_status_reason_example_parses():
    reason = parse_reason(
        json.loads((STATUS / "statusreason" / "example1.json").read_text()), "reason", pascal=False
    )
    assert reason == StatusReason(
        "Error.InstallFailed", "The app installation failed.", {"Timestamp": "2025-05-15T10:30:00Z"}
    )


def test_report_errors_and_the_full_report_flag_are_parsed():
    body = {
        "StatusItems": {},
        "Errors": [
            {
                "StatusItem": "softwareupdate.device-id",
                "Reasons": [{"Code": "Error.Unknown", "Description": "x"}],
            },
            {"StatusItem": "device.model.number"},
        ],
        "FullReport": True,
    }
    report = parse_status_report(json.dumps(body).encode())
    assert report.full_report
    assert report.errors == (
        StatusError("softwareupdate.device-id", (StatusReason("Error.Unknown", "x"),)),
        StatusError("device.model.number"),
    )
    assert report.raw == json.dumps(body).encode()


def test_errors_and_full_report_may_be_left_out():
    report = parse_status_report({"StatusItems": {"softwareupdate": {"install-state": "none"}}})
    assert report.errors == ()
    assert not report.full_report


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "status report is not valid JSON"),
        (b"\xff\xfe", "status report is not valid JSON"),
        (b'{"StatusItems": {"a": NaN}}', "status report is not valid JSON"),
        (b'{"StatusItems": {"a": "\\ud800"}}', "status report is not valid JSON"),
        (b"[]", "status report must be a JSON object, not an array"),
        (b"{}", "status report has no StatusItems"),
        (b'{"StatusItems": []}', "StatusItems must be an object, not an array"),
        (b'{"StatusItems": {}, "Errors": {}}', "Errors must be an array, not an object"),
        (
            b'{"StatusItems": {}, "Errors": [{}]}',
            r"Errors\[0\]\.StatusItem must be a string, not null",
        ),
        (
            b'{"StatusItems": {}, "Errors": [{"StatusItem": "a", "Reasons": [{}]}]}',
            r"Reasons\[0\]\.Code",
        ),
        (b'{"StatusItems": {}, "FullReport": "yes"}', "FullReport must be a boolean, not a string"),
    ],
)
def test_malformed_reports_raise_a_protocol_error_saying_what_is_wrong(body, message):
    with pytest.raises(DDMProtocolError, match=message):
        parse_status_report(body)


@pytest.mark.parametrize(
    ("items", "accessor", "message"),
    [
        (
            {"device": {"operating-system": {"version": 26}}},
            "os_version",
            "must be a string, not an integer",
        ),
        (
            {"device": {"operating-system": {"version": "twenty"}}},
            "os_version",
            "invalid macOS version",
        ),
        ({"device": "Mac"}, "os_version", "status item device must be an object"),
        (
            {"softwareupdate": {"failure-reason": {"count": True}}},
            "failure_reason",
            "count must be an integer",
        ),
        ({"softwareupdate": {"pending-version": "26.3"}}, "pending_version", "must be an object"),
        ({"softwareupdate": {"install-reason": {}}}, "install_reason", "reason must be an array"),
        (
            {"management": {"declarations": {"assets": [{"identifier": "a"}]}}},
            "declarations",
            "server-token",
        ),
    ],
)
def test_wrongly_typed_items_raise_a_protocol_error_when_read(items, accessor, message):
    view = StatusView(items)
    with pytest.raises(DDMProtocolError, match=message):
        getattr(view, accessor)


def test_flattening_keeps_object_valued_items_whole():
    items = {
        **apple_item("softwareupdate.pending-version"),
        "device": {"operating-system": {"version": "26.3", "supplemental": {"extra-version": "a"}}},
    }
    items["softwareupdate"]["install-state"] = "downloading"
    items.update(apple_item("management.declarations"))
    flat = flatten_status(items)
    assert flat["softwareupdate.pending-version"] == {
        "os-version": "27.1",
        "build-version": "24B32",
    }
    assert flat["softwareupdate.install-state"] == "downloading"
    assert flat["device.operating-system.supplemental.extra-version"] == "a"
    assert set(flat["management.declarations"]) == {
        "activations",
        "configurations",
        "assets",
        "management",
    }
    assert unflatten_status(flat) == items


def test_unknown_items_are_flattened_to_their_leaves():
    assert flatten_status({"device": {"power": {"battery-health": "normal"}, "empty": {}}}) == {
        "device.power.battery-health": "normal"
    }


STORED = {
    "device": {"operating-system": {"version": "26.2", "build-version": "25C56"}},
    "softwareupdate": {
        "install-state": "downloading",
        "pending-version": {
            "os-version": "26.3",
            "build-version": "25D125",
            "target-local-date-time": "2026-04-01T09:30:00",
        },
    },
    "management": {
        "declarations": {
            "activations": [
                {"identifier": "act", "server-token": "a1", "active": True, "valid": "valid"}
            ],
            "configurations": [
                {"identifier": "cfg", "server-token": "c1", "active": True, "valid": "valid"}
            ],
            "assets": [],
            "management": [],
        }
    },
}


def test_an_incremental_report_replaces_only_the_items_it_carries():
    update = {
        "device": {"operating-system": {"version": "26.3", "build-version": "25D125"}},
        "softwareupdate": {
            "install-state": "none",
            "pending-version": {"os-version": "", "build-version": ""},
        },
    }
    merged = merge_status(STORED, parse_status_report(report_of(update)))
    assert merged["device"]["operating-system"] == {"version": "26.3", "build-version": "25D125"}
    assert merged["softwareupdate"]["install-state"] == "none"
    # item values are replaced whole: the old deadline does not survive
    assert merged["softwareupdate"]["pending-version"] == {"os-version": "", "build-version": ""}
    assert merged["management"] == STORED["management"]


def test_an_incremental_report_keeps_items_it_does_not_mention():
    merged = merge_status(
        STORED, parse_status_report(report_of({"softwareupdate": {"install-state": "installing"}}))
    )
    assert (
        merged["softwareupdate"]["pending-version"] == STORED["softwareupdate"]["pending-version"]
    )
    assert merged["device"] == STORED["device"]


def test_an_incremental_declarations_report_replaces_only_the_arrays_it_carries():
    new_configs = [{"identifier": "cfg", "server-token": "c2", "active": True, "valid": "invalid"}]
    update = {"management": {"declarations": {"configurations": new_configs}}}
    merged = merge_status(STORED, parse_status_report(report_of(update)))
    declarations = merged["management"]["declarations"]
    assert declarations["configurations"] == new_configs
    assert declarations["activations"] == STORED["management"]["declarations"]["activations"]


def test_a_full_report_replaces_the_stored_status():
    full = {"device": {"operating-system": {"version": "26.3"}}}
    merged = merge_status(STORED, parse_status_report(report_of(full, full=True)))
    assert merged == full


def test_merging_never_modifies_the_stored_status():
    before = json.dumps(STORED, sort_keys=True)
    merge_status(
        STORED, parse_status_report(report_of({"softwareupdate": {"install-state": "none"}}))
    )
    merge_status(STORED, parse_status_report(report_of({}, full=True)))
    assert json.dumps(STORED, sort_keys=True) == before


def test_a_reported_item_replaces_a_stored_value_of_a_different_shape():
    stored = {"device": {"power": "unknown"}}
    merged = merge_status(
        stored, parse_status_report(report_of({"device": {"power": {"battery-health": "normal"}}}))
    )
    assert merged == {"device": {"power": {"battery-health": "normal"}}}


def test_the_merged_status_reads_through_the_same_typed_accessors():
    merged = merge_status(
        STORED, parse_status_report(report_of({"softwareupdate": {"install-state": "installing"}}))
    )
    view = StatusView(merged)
    assert view.os_version == OSVersion(26, 2)
    assert view.install_state == "installing"
    assert view.pending_version == PendingVersion(
        OSVersion(26, 3), Build(25, "D", 125), "2026-04-01T09:30:00"
    )


def test_an_incremental_report_onto_nothing_gives_the_report_itself():
    items: dict = {}
    for name in ("softwareupdate.pending-version", "softwareupdate.install-state"):
        items.setdefault("softwareupdate", {}).update(apple_item(name)["softwareupdate"])
    items.update(apple_item("management.declarations"))
    assert merge_status({}, parse_status_report(report_of(items))) == items
