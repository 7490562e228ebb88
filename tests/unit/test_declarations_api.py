"""Managed OS library items: validation messages, the one-item-per-(blueprint, major) rule,
and policy revisions that change only when the compiled policy does."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from catalog.feeds import parse_gdmf
from declarations import service
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
    with service_client("declarations", tmp_path) as c:
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
