"""Managed OS library items: validation messages, the one-item-per-(blueprint, major) rule,
and policy revisions that change only when the compiled policy does."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from catalog.feeds import parse_gdmf
from declarations import service
from managed_os.clock import FixedClock
from tests.support.apps import bearer, service_client

FEED = (
    Path(__file__).resolve().parents[1] / "data" / "feeds" / "gdmf_pmv_2026-08-22_sofa_cache.json"
)
W = bearer("declarations:write")


def load_catalog(client) -> None:
    ctx = client.app.state.ctx
    releases = parse_gdmf(FEED.read_bytes())

    async def put() -> None:
        async with ctx.uow() as uow:
            for rel in releases:
                await service.on_release(uow, rel, datetime(2026, 8, 25, tzinfo=UTC))
            await uow.commit()

    client.portal.call(put)


@pytest.fixture
def client(tmp_path):
    clock = FixedClock(datetime(2026, 8, 25, tzinfo=UTC))
    with service_client("declarations", tmp_path, clock=clock) as c:
        load_catalog(c)
        yield c


def blueprint(client) -> str:
    return str(client.post("/v1/blueprints", json={"name": "bp"}, headers=W).json()["id"])


def item(bp: str, **over) -> dict:
    body = {
        "major": 26,
        "blueprint_ids": [bp],
        "installation_method": "continuously_enforce",
        "version_enforcement": {
            "mode": "minimum",
            "version": "26.5",
            "deadline": "2026-09-01",
            "at": "17:00",
        },
    }
    body.update(over)
    return body


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {"version_enforcement": {"mode": "do_not_manage"}},
            "'do_not_manage' cannot be combined with installation_method 'continuously_enforce'",
        ),
        (
            {
                "version_enforcement": {
                    "mode": "minimum",
                    "version": "15.7",
                    "deadline": "2026-09-01",
                    "at": "17:00",
                }
            },
            "not a macOS 26 release",
        ),
        (
            {
                "version_enforcement": {
                    "mode": "minimum",
                    "version": "26.5",
                    "deadline": "2026-02-30",
                    "at": "17:00",
                }
            },
            "date",
        ),
        (
            {
                "version_enforcement": {
                    "mode": "minimum",
                    "version": "26.5",
                    "deadline": "2026-09-01",
                    "at": "25:00",
                }
            },
            "HH:MM",
        ),
        (
            {"version_enforcement": {"mode": "rolling", "within": "5d", "at": "09:00"}},
            "1d",
        ),
        ({"bsi_enforcement": {"mode": "sometimes"}}, "mode"),
        ({"colour": "red"}, "Extra inputs are not permitted"),
    ],
)
def test_an_invalid_item_is_a_422_with_a_clear_message(client, override, message):
    response = client.post("/v1/library-items", json=item(blueprint(client), **override), headers=W)
    assert response.status_code == 422
    assert message in response.text


def test_a_version_unknown_to_the_catalog_is_a_422(client):
    body = item(
        blueprint(client),
        version_enforcement={
            "mode": "specific",
            "version": "26.4.9",
            "deadline": "2026-09-01",
            "at": "17:00",
        },
    )
    response = client.post("/v1/library-items", json=body, headers=W)
    assert response.status_code == 422
    assert "26.4.9 is not a release the catalog knows" in response.json()["error"]["message"]


def test_a_second_item_for_the_same_blueprint_and_major_is_a_409_naming_the_first(client):
    bp = blueprint(client)
    first = client.post("/v1/library-items", json=item(bp), headers=W)
    assert first.status_code == 201
    second = client.post("/v1/library-items", json=item(bp, label="copy"), headers=W)
    assert second.status_code == 409
    assert second.json()["error"]["details"]["conflicting_item_id"] == first.json()["id"]
    # Another blueprint may take a labelled copy of the same major.
    assert (
        client.post("/v1/library-items", json=item(blueprint(client)), headers=W).status_code == 201
    )


def test_a_new_item_publishes_a_new_policy_revision_with_the_enforcement(client):
    bp = blueprint(client)
    r = bearer("declarations:read")
    assert client.get(f"/v1/blueprints/{bp}/policy", headers=r).json()["revision"] == 1
    client.post("/v1/library-items", json=item(bp), headers=W)
    policy = client.get(f"/v1/blueprints/{bp}/policy", headers=r).json()
    assert policy["revision"] == 2
    payloads = {
        c["declaration"]["Identifier"]: c["declaration"]["Payload"] for c in policy["candidates"]
    }
    minimum = next(p for i, p in payloads.items() if ".u." in i)
    assert minimum == {"TargetOSVersion": "26.6.2", "TargetLocalDateTime": "2026-09-01T17:00:00"}
    revisions = client.get(f"/v1/blueprints/{bp}/policy/revisions", headers=r).json()["items"]
    assert [x["revision"] for x in revisions] == [1, 2]


def test_replaying_the_same_catalog_stores_no_revision(client):
    bp = blueprint(client)
    client.post("/v1/library-items", json=item(bp), headers=W)
    load_catalog(client)  # the same releases again
    revisions = client.get(
        f"/v1/blueprints/{bp}/policy/revisions", headers=bearer("declarations:read")
    )
    assert len(revisions.json()["items"]) == 2


def rolling_item(bp: str, **over) -> dict:
    return item(bp, version_enforcement={"mode": "rolling", "within": "2w", "at": "09:00"}, **over)


def test_preview_shows_exactly_what_a_mac_gets_with_the_reason(client):
    bp = blueprint(client)
    client.post("/v1/library-items", json=rolling_item(bp), headers=W)
    r = bearer("declarations:read")
    behind = client.post(
        f"/v1/blueprints/{bp}/preview",
        headers=r,
        json={"os_version": "26.5.2", "device_id": "J514mAP"},
    ).json()
    types = [d["declaration"]["Type"] for d in behind["declarations"]]
    assert types == [
        "com.apple.configuration.management.status-subscriptions",
        "com.apple.configuration.softwareupdate.enforcement.specific",
        "com.apple.activation.simple",
    ]
    enforcement = behind["declarations"][1]
    assert enforcement["declaration"]["Payload"]["TargetOSVersion"] == "26.6.2"
    assert enforcement["reason"].startswith(
        "26.6 released 2026-07-27 + 2w → due 2026-08-10 09:00 local"
    )
    current = client.post(
        f"/v1/blueprints/{bp}/preview", headers=r, json={"os_version": "26.6.2"}
    ).json()
    assert [d["declaration"]["Type"] for d in current["declarations"]] == types[::2]
    assert current["declarations_token"] != behind["declarations_token"]
    bad = client.post(f"/v1/blueprints/{bp}/preview", headers=r, json={"os_version": "soon"})
    assert bad.status_code == 422


def test_put_replaces_an_item_and_recompiles_old_and_new_blueprints(client):
    a, b = blueprint(client), blueprint(client)
    created = client.post("/v1/library-items", json=item(a), headers=W).json()
    moved = client.put(f"/v1/library-items/{created['id']}", json=rolling_item(b), headers=W)
    assert moved.status_code == 200
    assert moved.json()["blueprint_ids"] == [b]
    assert moved.json()["upgrade_enforced_since"] == created["upgrade_enforced_since"]
    r = bearer("declarations:read")
    policy_a = client.get(f"/v1/blueprints/{a}/policy", headers=r).json()
    policy_b = client.get(f"/v1/blueprints/{b}/policy", headers=r).json()
    assert len(policy_a["candidates"]) == 1  # only the status subscriptions left
    assert len(policy_b["candidates"]) > 5
    other_major = client.put(
        f"/v1/library-items/{created['id']}", json={**rolling_item(b), "major": 15}, headers=W
    )
    assert other_major.status_code == 422 and "cannot change" in other_major.text


def test_deleting_an_item_or_a_blueprint_unpublishes_its_declarations(client):
    bp = blueprint(client)
    created = client.post("/v1/library-items", json=item(bp), headers=W).json()
    assert client.delete(f"/v1/library-items/{created['id']}", headers=W).status_code == 204
    assert client.get(f"/v1/library-items/{created['id']}", headers=W).status_code == 404
    r = bearer("declarations:read")
    assert len(client.get(f"/v1/blueprints/{bp}/policy", headers=r).json()["candidates"]) == 1
    assert client.delete(f"/v1/blueprints/{bp}", headers=W).status_code == 204
    assert client.get(f"/v1/blueprints/{bp}", headers=r).status_code == 404
    assert client.delete(f"/v1/blueprints/{bp}", headers=W).status_code == 404


def test_patch_renames_a_blueprint_and_refuses_unknown_fields(client):
    bp = blueprint(client)
    renamed = client.patch(f"/v1/blueprints/{bp}", json={"name": "Sales"}, headers=W)
    assert renamed.status_code == 200 and renamed.json()["name"] == "Sales"
    assert client.patch(f"/v1/blueprints/{bp}", json={"owner": "x"}, headers=W).status_code == 422


def test_a_self_service_request_gives_one_mac_an_upgrade_and_is_kept_for_audit(client):
    bp = blueprint(client)
    created = client.post(
        "/v1/library-items",
        headers=W,
        json=rolling_item(bp, installation_method="self_service"),
    ).json()
    url = f"/v1/library-items/{created['id']}/self-service-requests"
    req = client.post(url, json={"enrollment_id": "MAC-42"}, headers=W)
    assert req.status_code == 201
    assert req.json()["deadline"] == "2026-08-26T00:00:00"  # now (2026-08-25 00:00 UTC) + 24 h
    r = bearer("declarations:read")
    assert [x["enrollment_id"] for x in client.get(url, headers=r).json()["items"]] == ["MAC-42"]
    preview = client.post(
        f"/v1/blueprints/{bp}/preview",
        headers=r,
        json={"os_version": "15.7.9", "enrollment_id": "MAC-42"},
    ).json()
    payloads = [
        d["declaration"]["Payload"]
        for d in preview["declarations"]
        if "TargetOSVersion" in d["declaration"]["Payload"]
    ]
    assert payloads == [{"TargetOSVersion": "26.6.2", "TargetLocalDateTime": "2026-08-26T00:00:00"}]
    enforced = client.post("/v1/library-items", json=item(blueprint(client)), headers=W).json()
    refused = client.post(
        f"/v1/library-items/{enforced['id']}/self-service-requests",
        json={"enrollment_id": "MAC-1"},
        headers=W,
    )
    assert refused.status_code == 422


@pytest.mark.parametrize(
    "deadline", [1788220800, "2026-09-01T00:00:00", "0001-01-01", "01/09/2026"]
)
def test_a_deadline_that_is_not_a_plain_date_is_refused(client, deadline):
    body = item(
        blueprint(client),
        version_enforcement={
            "mode": "minimum",
            "version": "26.5",
            "deadline": deadline,
            "at": "17:00",
        },
    )
    response = client.post("/v1/library-items", json=body, headers=W)
    assert response.status_code == 422
    assert "deadline" in response.text


def test_a_specific_version_apple_no_longer_offers_is_refused(client):
    ctx = client.app.state.ctx
    old = parse_gdmf(FEED.read_bytes())[0].model_copy(
        update={"version": "26.5", "build": "25F71", "listed_by_apple": False, "major": 26}
    )

    async def put() -> None:
        async with ctx.uow() as uow:
            await service.on_release(uow, old, datetime(2026, 8, 25, tzinfo=UTC))
            await uow.commit()

    client.portal.call(put)
    body = item(
        blueprint(client),
        version_enforcement={
            "mode": "specific",
            "version": "26.5",
            "deadline": "2026-09-01",
            "at": "17:00",
        },
    )
    response = client.post("/v1/library-items", json=body, headers=W)
    assert response.status_code == 422
    assert "no longer offers" in response.json()["error"]["message"]


def test_self_service_requests_outlive_their_item_for_audit(client):
    bp = blueprint(client)
    created = client.post(
        "/v1/library-items", headers=W, json=rolling_item(bp, installation_method="self_service")
    ).json()
    url = f"/v1/library-items/{created['id']}/self-service-requests"
    client.post(url, json={"enrollment_id": "MAC-1"}, headers=W)
    client.app.state.ctx.clock.at = datetime(2026, 8, 25, 1, tzinfo=UTC)  # an hour later
    client.post(url, json={"enrollment_id": "MAC-1", "hours": 3}, headers=W)
    preview = client.post(
        f"/v1/blueprints/{bp}/preview",
        headers=W,
        json={"os_version": "15.7.9", "enrollment_id": "MAC-1"},
    ).json()
    enforcing = [
        d for d in preview["declarations"] if "TargetOSVersion" in d["declaration"]["Payload"]
    ]
    assert len(enforcing) == 1  # the newest request replaces the older one
    assert enforcing[0]["declaration"]["Payload"]["TargetLocalDateTime"] == "2026-08-25T04:00:00"
    client.delete(f"/v1/library-items/{created['id']}", headers=W)

    async def audit() -> int:
        async with client.app.state.ctx.uow() as uow:
            return len(await uow.requests.for_item(created["id"]))

    assert client.portal.call(audit) == 2
