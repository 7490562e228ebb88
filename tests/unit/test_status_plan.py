"""`plan_statuses` keeps a device's stored facts for an incremental report that carries none of
what they are read from: the shortcut must give exactly the facts a full recomputation gives."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from device_channel import service
from device_channel.repository import Device
from managed_os import ddm
from managed_os.manifest import ManifestMemo

NOW = datetime(2026, 9, 1, 12, tzinfo=UTC)
STORED = {
    "device": {
        "operating-system": {"version": "26.4.1", "build-version": "25E253"},
        "model": {"identifier": "Mac15,3"},
    },
    "softwareupdate": {"device-id": "J160AP", "install-state": "none"},
}


def device() -> Device:
    facts = service.facts_from_status("MAC-1", ddm.StatusView(STORED))
    return Device(
        enrollment_id="MAC-1",
        facts=facts,
        status=STORED,
        declarations_token="t",
        manifest_changed_at=NOW,
        created_at=NOW,
        updated_at=NOW,
    )


@pytest.mark.parametrize(
    ("items", "full", "kept"),
    [
        ({"softwareupdate": {"install-state": "downloading"}}, False, True),
        ({"management": {"declarations": {"configurations": []}}}, False, True),
        ({"softwareupdate": {"device-id": "J180dAP"}}, False, False),
        ({"softwareupdate": {}}, False, True),
        (
            {"device": {"operating-system": {"version": "26.5", "build-version": "25F71"}}},
            False,
            False,
        ),
        ({"device": {"model": {"identifier": "Mac16,1"}}}, False, False),
        ({"softwareupdate": {"install-state": "none"}}, True, False),  # a full report
    ],
)
def test_the_facts_after_a_report_are_those_of_the_merged_status(
    items: dict[str, Any], full: bool, kept: bool
) -> None:
    report = ddm.parse_status_report(json.dumps({"StatusItems": items, "FullReport": full}))
    assert service.keeps_facts(report) is kept
    plan = service.plan_statuses(
        ManifestMemo(), {"MAC-1": device()}, {None: None}, [("MAC-1", report)], NOW
    )
    after = plan.devices["MAC-1"]
    assert after.facts == service.facts_from_status("MAC-1", ddm.StatusView(after.status))
