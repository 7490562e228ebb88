"""DDM conformance of the device channel, over both endpoint forms (NanoMDM's `-dm` routes and
whole check-ins): a full sync, token stability, removal of a declaration, status merging —
and a fuzz test that no input makes a DDM endpoint answer 5xx."""

from __future__ import annotations

import json
import plistlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_channel.service import on_policy
from managed_os import ddm
from managed_os.policy import Applicability, Candidate, Policy
from tests.support.apps import bearer, service_client

FORMS = ["routes", "checkin"]


def enforcement(identifier: str, version: str) -> Candidate:
    from datetime import datetime

    decl = ddm.softwareupdate_enforcement(identifier, version, datetime(2026, 9, 1, 17))
    return Candidate(
        declaration=decl.to_json(),
        applies=Applicability(majors=[26], version_below=version),
    )


def subscriptions() -> Candidate:
    decl = ddm.status_subscriptions("subs", ["device.operating-system.version"])
    return Candidate(declaration=decl.to_json(), applies=Applicability(always=True))


class Mac:
    """Speaks to the TestClient in one of the two forms."""

    def __init__(self, client: Any, form: str, eid: str = "MAC-1") -> None:
        self.client, self.form, self.eid = client, form, eid

    def call(self, endpoint: str, data: bytes | None = None) -> Any:
        if self.form == "checkin":
            msg: dict[str, Any] = {
                "MessageType": "DeclarativeManagement",
                "Endpoint": endpoint,
                "UDID": self.eid,
            }
            if data is not None:
                msg["Data"] = data
            return self.client.put("/mdm/checkin", content=plistlib.dumps(msg))
        headers = {"X-Enrollment-ID": self.eid}
        if data is None:
            return self.client.get(f"/ddm/{endpoint}", headers=headers)
        return self.client.put(f"/ddm/{endpoint}", content=data, headers=headers)

    def report(self, items: dict[str, Any], full: bool = False) -> Any:
        body = json.dumps({"StatusItems": items, "Errors": [], "FullReport": full}).encode()
        return self.call("status", body)

    def sync(self) -> dict[tuple[str, str], dict[str, Any]]:
        """What a Mac does: tokens, then the manifest, then every declaration in it."""
        token = self.call("tokens").json()["SyncTokens"]["DeclarationsToken"]
        items = self.call("declaration-items").json()
        assert items["DeclarationsToken"] == token
        held = {}
        for key, category in (
            ("Activations", "activation"),
            ("Configurations", "configuration"),
            ("Assets", "asset"),
            ("Management", "management"),
        ):
            for entry in items["Declarations"][key]:
                body = self.call(f"declaration/{category}/{entry['Identifier']}")
                assert body.status_code == 200
                assert body.json()["ServerToken"] == entry["ServerToken"]
                held[(category, entry["Identifier"])] = body.json()
        return held


@pytest.fixture
def client(tmp_path):
    with service_client("device-channel", tmp_path, allow_unsigned=True) as c:
        yield c


def install(client, candidates: list[Candidate], revision: int) -> None:
    ctx = client.app.state.ctx
    policy = Policy(
        blueprint_id="bp", revision=revision, token=f"t{revision}", candidates=candidates
    )

    async def put() -> None:
        async with ctx.uow() as uow:
            await on_policy(uow, policy, ctx.clock.now())
            await uow.commit()

    client.portal.call(put)


@pytest.mark.parametrize("form", FORMS)
def test_a_full_sync_token_stability_and_removal(client, form):
    client.post(
        "/v1/devices",
        json={"enrollment_id": "MAC-1", "blueprint_id": "bp"},
        headers=bearer("device-channel:write"),
    )
    install(client, [subscriptions(), enforcement("cfg-26-6", "26.6")], 1)
    mac = Mac(client, form)
    assert (
        mac.report({"device": {"operating-system": {"version": "26.5"}}}, full=True).content == b""
    )
    held = mac.sync()
    assert set(held) == {
        ("configuration", "subs"),
        ("configuration", "cfg-26-6"),
        ("activation", "managed-os.activation"),
    }
    assert held[("activation", "managed-os.activation")]["Payload"]["StandardConfigurations"] == [
        "cfg-26-6",
        "subs",
    ]
    tokens = {mac.call("tokens").json()["SyncTokens"]["DeclarationsToken"] for _ in range(5)}
    assert len(tokens) == 1  # stable across requests
    # The policy drops the enforcement: the manifest and token change, the old one is 404.
    install(client, [subscriptions()], 2)
    assert mac.call("tokens").json()["SyncTokens"]["DeclarationsToken"] not in tokens
    assert mac.call("declaration/configuration/cfg-26-6").status_code == 404
    assert set(mac.sync()) == {("configuration", "subs"), ("activation", "managed-os.activation")}


@pytest.mark.parametrize("form", FORMS)
def test_status_merges_incrementally_and_a_full_report_replaces(client, form):
    mac = Mac(client, form)
    mac.report(
        {
            "device": {"operating-system": {"version": "26.5", "build-version": "25F71"}},
            "softwareupdate": {"install-state": "downloading"},
        },
        full=True,
    )
    mac.report({"softwareupdate": {"install-state": "installing"}})
    status = client.get("/v1/devices/MAC-1", headers=bearer("device-channel:read")).json()
    stored = status["device"]["status"]
    assert stored["device"]["operating-system"]["version"] == "26.5"  # kept
    assert stored["softwareupdate"]["install-state"] == "installing"  # replaced
    mac.report({"device": {"operating-system": {"version": "26.6"}}}, full=True)
    stored = client.get("/v1/devices/MAC-1", headers=bearer("device-channel:read")).json()[
        "device"
    ]["status"]
    assert stored == {"device": {"operating-system": {"version": "26.6"}}}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
paths = st.sampled_from(
    [
        "/ddm/tokens",
        "/ddm/declaration-items",
        "/ddm/status",
        "/mdm/checkin",
        "/ddm/declaration/configuration/x",
        "/ddm/declaration/bogus/x",
    ]
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=paths,
    method=st.sampled_from(["GET", "PUT"]),
    body=st.one_of(
        st.binary(max_size=64),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries({"StatusItems": json_values}).map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {
                "MessageType": st.sampled_from(["DeclarativeManagement", "Authenticate", ""]),
                "Endpoint": st.sampled_from(["tokens", "status", "declaration/x/y", "nope"]),
                "UDID": st.text(
                    alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=8
                ),
                "Data": st.binary(max_size=32),
            }
        ).map(plistlib.dumps),
    ),
    eid=st.one_of(st.none(), st.text(min_size=0, max_size=12)),
)
def test_no_input_makes_a_ddm_endpoint_answer_5xx(client, path, method, body, eid):
    headers = {}
    if eid is not None and eid.isprintable() and eid.isascii():
        headers["X-Enrollment-ID"] = eid
    response = client.request(method, path, content=body, headers=headers)
    assert response.status_code < 500, (path, method, body, eid, response.text)
