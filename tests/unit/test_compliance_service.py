"""The compliance service behind its API: events in (over its own in-process bus), states,
history, sweep, summaries, pagination, CSV, trend and gauges out."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from compliance.main import snapshot, sweep_all
from compliance.rules import Verdict
from compliance.service import compliance_changed
from managed_os.bus.inprocess import InProcessBus
from managed_os.clock import FixedClock
from managed_os.cloudevents import CloudEvent
from managed_os.events import (
    TOPIC_COMPLIANCE,
    TOPIC_DEVICES,
    DeviceComplianceChanged,
    DeviceRegistered,
    DeviceStatusReported,
    DeviceUnenrolled,
    EventPayload,
    PolicyPublished,
    SoftwareUpdateState,
    to_event,
)
from managed_os.policy import DeviceFacts, ExpectedEnforcement, PolicyItem
from tests.support.apps import bearer, service_client

NOW = datetime(2026, 8, 31, 12, 0, tzinfo=UTC)
READ = bearer("compliance:read")
ITEM = PolicyItem(
    item_id="item-26",
    label="macOS 26",
    major=26,
    mode="minimum",
    installation_method="continuously_enforce",
    boards=["J313AP", "J413AP"],
)
ENFORCE = ExpectedEnforcement(
    item_id="item-26",
    declaration_id="managed-os.item-26.u.aaaaaaaaaaaa",
    kind="update",
    target_version="26.6.2",
    deadline="2026-09-01T17:00:00",
)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def client(tmp_path, clock) -> Iterator[TestClient]:
    # Slow loops: the tests drive the sweep and snapshots themselves.
    with service_client(
        "compliance",
        tmp_path,
        clock=clock,
        sweep_interval_seconds=3600,
        snapshot_interval_seconds=3600,
        metrics_interval_seconds=0.05,
    ) as c:
        yield c


def send(client: TestClient, *payloads: EventPayload | CloudEvent) -> None:
    """Publish on the service's own bus (a CloudEvent passed as is goes to the devices
    topic)."""
    bus = client.app.state.ctx.bus  # type: ignore[attr-defined]
    for p in payloads:
        if isinstance(p, CloudEvent):
            topic, event = TOPIC_DEVICES, p
        else:
            topic, event = p.TOPIC, _event(p)
        client.portal.call(bus.publish, topic, event)  # type: ignore[union-attr]


def _event(p: EventPayload) -> CloudEvent:
    subject = str(getattr(p, "enrollment_id", None) or getattr(p, "blueprint_id", "x"))
    return to_event(p, source="/test", subject=subject, time=NOW)


def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def device(client: TestClient, eid: str, status: int = 200) -> dict[str, Any]:
    r = client.get(f"/v1/devices/{eid}", headers=READ)
    assert r.status_code == status, r.text
    return r.json()


def report(
    eid: str,
    version: str = "26.4.1",
    *,
    board: str = "J313AP",
    expected: tuple[ExpectedEnforcement, ...] = (ENFORCE,),
    at: datetime = NOW,
    blueprint: str | None = "bp-1",
    **su: Any,
) -> DeviceStatusReported:
    return DeviceStatusReported(
        enrollment_id=eid,
        blueprint_id=blueprint,
        reported_at=at,
        full_report=True,
        facts=DeviceFacts(enrollment_id=eid, os_version=version, device_id=board),
        softwareupdate=SoftwareUpdateState(**su),
        declarations=[],
        expected=list(expected),
    )


def policy(revision: int = 1, items: tuple[PolicyItem, ...] = (ITEM,)) -> PolicyPublished:
    return PolicyPublished(
        blueprint_id="bp-1",
        revision=revision,
        token=f"t{revision}",
        candidates=[],
        items=list(items),
    )


def run(client: TestClient, fn: Callable[..., Any]) -> Any:
    assert client.portal is not None
    return client.portal.call(fn, client.app.state.ctx)  # type: ignore[attr-defined]


def assert_counts_match_the_rows(client: TestClient) -> None:
    """The running counts behind the summaries equal a recount of the rows."""

    async def check(ctx: Any) -> None:
        async with ctx.uow() as uow:
            scopes: list[tuple[str, str, dict[str, Any]]] = [("fleet", "", {})]
            for bp in ("bp-1", "bp-2", "-"):
                scopes.append(("blueprint", bp, {"blueprint_id": bp}))
            scopes += [("item", "item-26", {"item_id": "item-26"}), ("major", "26", {"major": 26})]
            for scope_name, key, where in scopes:
                running = await uow.store.read_counts(scope_name, key)
                if scope_name == "blueprint" and key == "-":
                    continue  # unassigned Macs: no filter value names them
                assert running == await uow.store.counts(**where), (scope_name, key)

    run(client, check)


def test_a_report_makes_a_mac_pending_with_its_target_deadline_and_a_history(client):
    send(client, policy(), report("MAC-1"))
    mac = eventually(lambda: device(client, "MAC-1"))
    assert mac["state"] == "pending"
    assert (mac["target_version"], mac["deadline"]) == ("26.6.2", "2026-09-01T17:00:00")
    assert mac["due_at"].startswith("2026-09-02T06:00:00")
    assert mac["items"][0]["item_id"] == "item-26" and mac["items"][0]["item_major"] == 26
    assert [(h["previous"], h["state"]) for h in mac["history"]] == [(None, "pending")] * 2
    assert mac["history"][0]["cause"].startswith("device-status-reported:")
    bus: InProcessBus = client.app.state.ctx.bus
    changed = eventually(lambda: bus._log[TOPIC_COMPLIANCE])
    assert {e.data["state"] for e in changed} == {"pending"}
    assert [e.data["item_id"] for e in changed] == [None]  # the Mac's overall state


def test_time_alone_makes_a_mac_overdue_through_the_sweep(client, clock):
    send(client, policy(), report("MAC-1", at=NOW))
    eventually(lambda: device(client, "MAC-1")["state"] == "pending")
    run(client, sweep_all)  # settles the policy's re-evaluation, if it came after the report
    clock.at = datetime(2026, 9, 2, 5, 59, tzinfo=UTC)
    assert run(client, sweep_all) == 0  # not due yet: the sweep reads nobody
    clock.at = datetime(2026, 9, 2, 6, 0, tzinfo=UTC)
    assert run(client, sweep_all) == 1
    mac = device(client, "MAC-1")
    assert mac["state"] == "overdue"
    assert mac["history"][0]["cause"] == "deadline"
    clock.at = NOW + timedelta(hours=72)  # …and silence makes it unknown
    run(client, sweep_all)
    assert device(client, "MAC-1")["history"][0]["cause"] == "stale"


def test_a_report_that_changes_no_state_leaves_the_next_check_and_the_sweep_settles_it(
    client, clock
):
    """The stored next check stays when a report only moves it later (the row is then
    rewritten without touching an indexed column); the sweep looks at the Mac then, finds
    nothing changed, and stores the exact time. A report that needs an earlier look moves
    it at once."""
    send(client, policy(), report("MAC-1", "26.6.2", expected=(), at=NOW))
    eventually(lambda: device(client, "MAC-1")["state"] == "up_to_date")
    run(client, sweep_all)  # settles the policy's re-evaluation, if it came after the report
    clock.at = NOW + timedelta(hours=24)
    send(client, report("MAC-1", "26.6.2", expected=(), at=clock.at))
    eventually(lambda: device(client, "MAC-1")["last_report_at"].startswith("2026-09-01T12"))
    before = device(client, "MAC-1")["history"]
    clock.at = NOW + timedelta(hours=72)  # the first report's stale window
    assert run(client, sweep_all) == 1  # looked at early…
    mac = device(client, "MAC-1")
    assert mac["state"] == "up_to_date" and mac["history"] == before  # …nothing changed
    assert run(client, sweep_all) == 0  # the exact time (the second report's window) stored
    # A deadline needing a look before the stored time (72 h after the second report) is
    # stored at once: due 2026-09-04 09:00 UTC (20:00 local in UTC−12, plus the grace).
    soon = ENFORCE.model_copy(update={"deadline": "2026-09-03T20:00:00"})
    send(client, report("MAC-1", expected=(soon,), at=clock.at))
    eventually(lambda: device(client, "MAC-1")["state"] == "pending")
    clock.at = datetime(2026, 9, 4, 9, 0, tzinfo=UTC)
    assert run(client, sweep_all) == 1
    mac = device(client, "MAC-1")
    assert mac["state"] == "overdue" and mac["history"][0]["cause"] == "deadline"


def test_a_registered_time_zone_moves_the_deadline(client, clock):
    tz = DeviceRegistered(
        enrollment_id="MAC-1", blueprint_id="bp-1", time_zone="Europe/Paris", changed_at=NOW
    )
    send(client, policy(), tz, report("MAC-1"))
    mac = eventually(lambda: device(client, "MAC-1"))
    assert mac["time_zone"] == "Europe/Paris"
    assert mac["due_at"].startswith("2026-09-01T16:00:00")  # 17:00 CEST + 1 h grace


def test_summaries_by_fleet_blueprint_item_and_major_with_late_and_failed_lists(client):
    send(
        client,
        policy(),
        report("MAC-1"),
        report("MAC-2", "26.6.2", expected=()),
        report("MAC-3", install_state="failed", failure_count=1, failure_reason="No space"),
        report("MAC-4", "15.7.1", board="Mac-7BA5B2DFE22DDD8C", expected=()),
        report("MAC-5", blueprint=None, expected=()),
    )
    eventually(lambda: client.get("/v1/summary", headers=READ).json()["total"] == 5)
    fleet = client.get("/v1/summary", headers=READ).json()
    assert fleet["counts"] | {} == {
        "up_to_date": 1,
        "pending": 1,
        "in_progress": 0,
        "overdue": 0,
        "failed": 1,
        "incompatible": 1,
        "unknown": 0,
        "not_managed": 1,
    }
    assert fleet["percent_up_to_date"] == 25.0  # 1 of the 4 managed Macs
    assert fleet["versions"] == {"26.4.1": 3, "26.6.2": 1, "15.7.1": 1}
    assert [(m["enrollment_id"], "No space" in m["reason"]) for m in fleet["failed"]] == [
        ("MAC-3", True)
    ]
    by_item = client.get("/v1/summary?item_id=item-26", headers=READ).json()
    assert by_item["total"] == 4 and by_item["counts"]["incompatible"] == 1
    assert client.get("/v1/summary?major=26", headers=READ).json()["counts"] == by_item["counts"]
    assert client.get("/v1/summary?blueprint_id=nope", headers=READ).json()["total"] == 0
    both = client.get("/v1/summary?blueprint_id=bp-1&item_id=item-26", headers=READ).json()
    assert both["counts"] == by_item["counts"]  # the scan path agrees with the running counts
    assert_counts_match_the_rows(client)


def test_an_event_seen_twice_is_applied_once(client):
    event = _event(report("MAC-1"))
    send(client, policy(), event, event)
    eventually(lambda: device(client, "MAC-1"))
    send(client, report("MAC-9"))  # a later event: the duplicate has been consumed by now
    eventually(lambda: device(client, "MAC-9"))
    assert len(device(client, "MAC-1")["history"]) == 2  # overall + item, once


def test_an_older_report_arriving_late_changes_nothing(client):
    send(client, policy(), report("MAC-1", "26.6.2", expected=(), at=NOW))
    eventually(lambda: device(client, "MAC-1")["state"] == "up_to_date")
    send(client, report("MAC-1", "26.4.1", at=NOW - timedelta(hours=1)), report("MAC-9"))
    eventually(lambda: device(client, "MAC-9"))
    assert device(client, "MAC-1")["state"] == "up_to_date"


def test_unenrolled_macs_disappear_but_a_new_policy_revisits_the_rest(client, clock):
    send(client, policy(), report("MAC-1"), report("MAC-2", "15.7.1", board="Mac-X", expected=()))
    eventually(lambda: device(client, "MAC-2")["state"] == "incompatible")
    send(client, DeviceUnenrolled(enrollment_id="MAC-1", unenrolled_at=NOW))
    eventually(lambda: device(client, "MAC-1", 404))
    # The major's device list grows to include Mac-X: the sweep judges the blueprint again.
    send(client, policy(2, (ITEM.model_copy(update={"boards": ["J313AP", "Mac-X"]}),)))
    eventually(lambda: run(client, sweep_all) and device(client, "MAC-2")["state"] == "up_to_date")
    assert device(client, "MAC-2")["history"][0]["cause"] == "policy"
    # The Mac moves blueprint; the new one has no items (its item rows go).
    send(client, DeviceRegistered(enrollment_id="MAC-2", blueprint_id="bp-2", changed_at=NOW))
    eventually(lambda: device(client, "MAC-2")["blueprint_id"] == "bp-2")
    assert device(client, "MAC-2")["items"] == []
    assert_counts_match_the_rows(client)
    summary = client.get("/v1/summary", headers=READ).json()
    assert summary["total"] == 1 and summary["counts"]["up_to_date"] == 1


def test_devices_are_filtered_and_paged_by_cursor(client):
    send(client, policy(), *(report(f"MAC-{n}") for n in range(5)), report("MAC-X", "26.6.2"))
    eventually(lambda: client.get("/v1/summary", headers=READ).json()["total"] == 6)
    seen, cursor = [], None
    while True:
        q = "/v1/devices?state=pending&limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(q, headers=READ).json()
        seen += [d["enrollment_id"] for d in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"MAC-{n}" for n in range(5)]
    assert client.get("/v1/devices?version=26.6.2", headers=READ).json()["items"][0]["state"] == (
        "up_to_date"
    )
    assert client.get("/v1/devices?cursor=%%%", headers=READ).status_code == 422
    assert client.get("/v1/devices?state=late", headers=READ).status_code == 422
    assert client.get("/v1/devices?limit=0", headers=READ).status_code == 422


def test_the_csv_export_streams_every_mac_and_defuses_formulas(client):
    evil = report("=cmd|'/C calc'!A0")
    send(client, policy(), *(report(f"MAC-{n:04d}") for n in range(1203)), evil)
    eventually(lambda: client.get("/v1/summary", headers=READ).json()["total"] == 1204, 30)
    r = client.get("/v1/export.csv", headers=READ)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 1204
    assert {row["state"] for row in rows} == {"pending"}
    assert "'=cmd|'/C calc'!A0" in {row["enrollment_id"] for row in rows}
    filtered = client.get("/v1/export.csv?state=overdue", headers=READ).text.splitlines()
    assert filtered == [",".join(filtered[0].split(","))]  # the header alone


def test_trend_and_gauges(client, clock):
    send(client, policy(), report("MAC-1"), report("MAC-2", "26.6.2", expected=()))
    eventually(lambda: client.get("/v1/summary", headers=READ).json()["total"] == 2)
    run(client, snapshot)
    clock.at = NOW + timedelta(days=1)
    run(client, snapshot)
    days = client.get("/v1/trend?days=7", headers=READ).json()["days"]
    assert [d["day"] for d in days] == ["2026-08-31", "2026-09-01"]
    assert days[0]["counts"]["up_to_date"] == 1 and days[0]["percent_up_to_date"] == 50.0
    bp = client.get("/v1/trend?blueprint_id=bp-1", headers=READ).json()["days"]
    assert bp[-1]["counts"]["pending"] == 1
    metrics = eventually(
        lambda: (
            (t := client.get("/metrics").text)
            and 'mos_compliance_devices{blueprint_id="bp-1",state="pending"} 1.0' in t
            and t
        )
    )
    assert 'state="up_to_date"} 1.0' in metrics


def test_every_compliance_route_needs_the_read_scope(client):
    for path in ("/v1/summary", "/v1/devices", "/v1/devices/x", "/v1/trend", "/v1/export.csv"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers=bearer("catalog:read")).status_code == 403


@pytest.mark.parametrize(
    ("previous", "verdict"),
    [
        (None, Verdict("pending", "macOS 26.6.2 due", "26.6.2", "2026-09-01T17:00:00", NOW)),
        ("pending", Verdict("up_to_date", "on macOS 26.6.2")),
    ],
)
def test_the_compliance_changed_data_is_what_the_event_model_dumps(previous, verdict):
    at = NOW + timedelta(microseconds=250)
    built = compliance_changed("MAC-1", "bp-1", previous, verdict, "status:e-1", at)
    model = DeviceComplianceChanged(
        enrollment_id="MAC-1",
        blueprint_id="bp-1",
        item_id=None,
        previous=previous,
        state=verdict.state,
        reason=verdict.reason,
        target_version=verdict.target_version,
        deadline=verdict.deadline,
        cause="status:e-1",
        changed_at=at,
    )
    assert built == model.model_dump(mode="json")
    assert DeviceComplianceChanged.model_validate(built) == model


def test_a_reports_inputs_are_the_model_that_model_construct_builds():
    """`status_inputs` builds `DeviceInputs` directly: the same fields, fields-set, extra and
    private state as `model_construct`, and it stays a model that takes assignments and
    dumps as one validated from the same data does."""
    from compliance.rules import DeviceInputs
    from compliance.service import merge_into, status_inputs

    r = report("MAC-1")
    built = status_inputs(r, "Europe/Paris")
    constructed = DeviceInputs.model_construct(
        enrollment_id=r.enrollment_id,
        blueprint_id=r.blueprint_id,
        time_zone="Europe/Paris",
        facts=r.facts,
        softwareupdate=r.softwareupdate,
        declarations=r.declarations,
        expected=r.expected,
        last_report_at=r.reported_at,
    )
    assert built.__dict__ == constructed.__dict__
    assert built.model_fields_set == constructed.model_fields_set == set(DeviceInputs.model_fields)
    assert (built.__pydantic_extra__, built.__pydantic_private__) == (None, None)
    assert built.model_dump() == DeviceInputs.model_validate(built.model_dump()).model_dump()
    registered = DeviceRegistered(enrollment_id="MAC-1", blueprint_id="bp-2", changed_at=NOW)
    merge_into(built, registered)
    assert (built.blueprint_id, built.time_zone) == ("bp-2", None)
    assert built.model_fields_set == set(DeviceInputs.model_fields)


def test_the_judged_rows_have_exactly_their_tables_columns():
    """`flush` compares an item row as judged with the stored one as whole dicts: a column
    the judged row lacked (or had extra) would make every row differ, and be rewritten on
    every report, with nothing else failing."""
    from compliance.models import device_items, devices
    from compliance.service import Fold, status_inputs

    fold = Fold(None, NOW, timedelta(hours=72))  # judged, not stored: no unit of work
    fold.items["bp-1"] = [ITEM]
    mac = fold.reported("MAC-1")
    mac.inputs = status_inputs(report("MAC-1"), None)
    fold.judge("MAC-1", "test")
    assert mac.row is not None and set(mac.row) == {c.name for c in devices.columns}
    assert mac.written and all(
        set(row) == {c.name for c in device_items.columns} for row in mac.written.values()
    )
