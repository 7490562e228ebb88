"""Device-channel DDM endpoints: Apple's shapes, HMAC, the raw check-in, hostile input."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import plistlib

import pytest

from device_channel.repository import DeviceChannelUnitOfWork
from managed_os.policy import Policy
from tests.support.apps import bearer, service_client

KEY = b"unit-hmac-key"


def sign(body: bytes) -> str:
    return base64.b64encode(hmac.new(KEY, body, hashlib.sha256).digest()).decode()


def headers(body: bytes = b"", eid: str = "MAC-1", **extra: str) -> dict[str, str]:
    return {"X-Enrollment-ID": eid, "X-Hmac-Signature": sign(body), **extra}


def report(version: str = "26.4.1", build: str = "25E253", **more: object) -> bytes:
    items = {"device": {"operating-system": {"version": version, "build-version": build}}}
    return json.dumps({"StatusItems": {**items, **more}, "Errors": []}).encode()


@pytest.fixture
def client(tmp_path):
    with service_client("device-channel", tmp_path, hmac_key=KEY.decode()) as c:
        yield c


def test_tokens_and_declaration_items_have_apples_shapes_and_are_signed(client):
    tokens = client.get("/ddm/tokens", headers=headers())
    assert tokens.status_code == 200
    assert tokens.headers["x-hmac-signature"] == sign(tokens.content)
    sync = tokens.json()["SyncTokens"]
    assert set(sync) == {"DeclarationsToken", "Timestamp"}
    assert sync["Timestamp"].endswith("Z")
    items = client.get("/ddm/declaration-items", headers=headers()).json()
    assert items == {
        "Declarations": {"Activations": [], "Configurations": [], "Assets": [], "Management": []},
        "DeclarationsToken": sync["DeclarationsToken"],
    }


def test_a_request_with_a_missing_or_wrong_signature_is_401(client):
    no_sig = client.get("/ddm/tokens", headers={"X-Enrollment-ID": "MAC-1"})
    wrong = client.put("/ddm/status", content=report(), headers={**headers(b"other body")})
    assert no_sig.status_code == 401
    assert wrong.status_code == 401
    assert wrong.json()["error"]["message"] == "missing or invalid X-Hmac-Signature"


def test_a_status_report_gets_an_empty_200_and_updates_the_device_facts(client):
    body = report()
    response = client.put("/ddm/status", content=body, headers=headers(body))
    assert response.status_code == 200
    assert response.content == b""
    device = client.get("/v1/devices/MAC-1", headers=bearer("device-channel:read")).json()
    assert device["device"]["facts"]["os_version"] == "26.4.1"
    assert device["device"]["facts"]["build_version"] == "25E253"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"Errors": []}', "no StatusItems"),
        (b'{"StatusItems": "x"}', "StatusItems must be an object"),
        (b"<html><body>502 Bad Gateway</body></html>", "not valid JSON"),
        (report(softwareupdate={"failure-reason": {"count": "many"}}), "count"),
        (report(version="twenty-six"), "version"),
    ],
)
def test_a_malformed_status_report_is_a_400_and_leaves_stored_status_intact(client, body, fragment):
    good = report()
    assert client.put("/ddm/status", content=good, headers=headers(good)).status_code == 200
    response = client.put("/ddm/status", content=body, headers=headers(body))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "malformed"
    assert fragment.lower() in response.json()["error"]["message"].lower()
    device = client.get("/v1/devices/MAC-1", headers=bearer("device-channel:read")).json()
    assert device["device"]["facts"]["os_version"] == "26.4.1"


def test_a_declaration_outside_the_manifest_is_404_and_a_bad_category_too(client):
    missing = client.get("/ddm/declaration/configuration/nope", headers=headers())
    bad_category = client.get("/ddm/declaration/configurations/nope", headers=headers())
    assert missing.status_code == 404
    assert bad_category.status_code == 404


def checkin(endpoint: str, data: bytes | None = None, **extra: object) -> bytes:
    msg: dict[str, object] = {
        "MessageType": "DeclarativeManagement",
        "Endpoint": endpoint,
        "UDID": "MAC-2",
        **extra,
    }
    if data is not None:
        msg["Data"] = data
    return plistlib.dumps(msg)


def test_the_raw_checkin_serves_the_same_endpoints(client):
    tokens = client.put("/mdm/checkin", content=(b := checkin("tokens")), headers=headers(b))
    assert tokens.status_code == 200
    assert "DeclarationsToken" in tokens.json()["SyncTokens"]
    status = client.put(
        "/mdm/checkin",
        content=(b := checkin("status", report("26.5", "25F71"))),
        headers=headers(b),
    )
    assert status.status_code == 200 and status.content == b""
    device = client.get("/v1/devices/MAC-2", headers=bearer("device-channel:read")).json()
    assert device["device"]["facts"]["os_version"] == "26.5"


@pytest.mark.parametrize(
    "body",
    [
        b"not a plist",
        b"<?xml version='1.0'?><plist><dict><key>MessageType</key></plist>",
        plistlib.dumps({"MessageType": "Authenticate", "UDID": "X"}),
        plistlib.dumps({"MessageType": "DeclarativeManagement", "Endpoint": "tokens"}),
        plistlib.dumps({"MessageType": "DeclarativeManagement", "UDID": "X", "Endpoint": "bogus"}),
        plistlib.dumps(["a", "list"]),
    ],
)
def test_a_malformed_checkin_is_a_400_with_a_clear_message(client, body):
    response = client.put("/mdm/checkin", content=body, headers=headers(body))
    assert response.status_code == 400
    assert response.json()["error"]["message"]


def _install_policy(client, blueprint_id: str) -> None:
    from declarations.compiler import status_subscriptions_candidate

    policy = Policy(
        blueprint_id=blueprint_id,
        revision=1,
        token="t" * 64,
        candidates=[status_subscriptions_candidate()],
    )
    ctx = client.app.state.ctx

    async def put() -> None:
        uow: DeviceChannelUnitOfWork = ctx.uow()
        async with uow:
            from device_channel.service import on_policy

            await on_policy(uow, policy, ctx.clock.now())
            await uow.commit()

    client.portal.call(put)


def test_the_user_channel_gets_an_empty_manifest(client):
    reg = client.post(
        "/v1/devices",
        json={"enrollment_id": "MAC-3", "blueprint_id": "bp-1"},
        headers=bearer("device-channel:write"),
    )
    assert reg.status_code == 201
    _install_policy(client, "bp-1")
    device = client.get("/ddm/declaration-items", headers=headers(eid="MAC-3")).json()
    user = client.get(
        "/ddm/declaration-items", headers=headers(eid="MAC-3", **{"X-Enrollment-Type": "User"})
    ).json()
    assert [c["Identifier"] for c in device["Declarations"]["Configurations"]] == [
        "managed-os.status-subscriptions"
    ]
    assert device["Declarations"]["Activations"]
    assert user["Declarations"]["Configurations"] == []
    assert user["Declarations"]["Activations"] == []


def test_error_responses_on_device_paths_are_signed_too(client):
    missing = client.get("/ddm/declaration/configuration/nope", headers=headers())
    assert missing.status_code == 404
    assert missing.headers["x-hmac-signature"] == sign(missing.content)


def test_registering_a_device_returns_its_current_token_and_keeps_unsent_fields(client):
    w = bearer("device-channel:write")
    _install_policy(client, "bp-9")
    first = client.post(
        "/v1/devices", json={"enrollment_id": "MAC-9", "blueprint_id": "bp-9"}, headers=w
    ).json()
    tokens = client.get("/ddm/tokens", headers=headers(eid="MAC-9")).json()
    assert first["declarations_token"] == tokens["SyncTokens"]["DeclarationsToken"]
    again = client.post(
        "/v1/devices", json={"enrollment_id": "MAC-9", "serial_number": "C02X"}, headers=w
    ).json()
    assert again["blueprint_id"] == "bp-9" and again["serial_number"] == "C02X"


def test_the_tokens_timestamp_moves_only_when_the_token_does(client):
    body = report()
    client.put("/ddm/status", content=body, headers=headers(body))
    first = client.get("/ddm/tokens", headers=headers()).json()["SyncTokens"]
    body = report(softwareupdate={"install-state": "downloading"})
    client.put("/ddm/status", content=body, headers=headers(body))
    second = client.get("/ddm/tokens", headers=headers()).json()["SyncTokens"]
    assert second == first


def test_a_device_moves_blueprint_and_is_unenrolled(client):
    w, r = bearer("device-channel:write"), bearer("device-channel:read")
    _install_policy(client, "bp-1")
    created = client.post(
        "/v1/devices",
        headers=w,
        json={
            "enrollment_id": "MAC-5",
            "blueprint_id": "bp-1",
            "serial_number": "C02X",
            "model": "Mac15,3",
        },
    ).json()
    assert created["model"] == "Mac15,3"
    moved = client.put("/v1/devices/MAC-5/blueprint", json={"blueprint_id": None}, headers=w)
    assert moved.status_code == 200 and moved.json()["blueprint_id"] is None
    assert moved.json()["declarations_token"] != created["declarations_token"]
    assert (
        client.put(
            "/v1/devices/NOPE/blueprint", json={"blueprint_id": "bp-1"}, headers=w
        ).status_code
        == 404
    )
    assert client.delete("/v1/devices/MAC-5", headers=w).status_code == 204
    assert client.get("/v1/devices/MAC-5", headers=r).status_code == 404
    assert client.delete("/v1/devices/MAC-5", headers=w).status_code == 404
