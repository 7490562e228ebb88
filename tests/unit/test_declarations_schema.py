"""Every declaration the policy compiler can produce, checked against Apple's own schema YAML.

Release data is real (tests/data/feeds): the August 2026 catalog (GDMF + SOFA), and the April
2026 GDMF snapshot cut back to March (no 26.4.x), when 26.3.1 (25D2128) was the latest and its
BSI 26.3.1 (a) (25D771280a) applied to it. The schema files are verbatim copies of Apple's
(tests/data/apple); tests/support/apple_schema.py reads them.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from catalog.feeds import merge_sources, parse_gdmf, parse_sofa
from declarations.compiler import compile_blueprint
from declarations.schemas import LibraryItem
from managed_os import ddm
from managed_os.events import ReleaseData
from managed_os.manifest import build_manifest
from managed_os.policy import Candidate, DeviceFacts, Policy
from tests.support.apple_schema import (
    APPLE_DATA,
    validate_declaration,
    validate_items_response,
    validate_keys,
    validate_tokens_response,
)

DATA = Path(__file__).resolve().parents[1] / "data"
FEEDS = DATA / "feeds"
ITEM_ID = "5b1f7c2e-8a4d-4e0b-9c3a-2d6e1f0a7b94"
T = datetime(2026, 8, 1, tzinfo=UTC)
SELF_SERVICE = {ITEM_ID: [("ENROLL-1", datetime(2026, 8, 26, 12, 0))]}


def august_releases() -> list[ReleaseData]:
    return merge_sources(
        parse_gdmf((FEEDS / "gdmf_pmv_2026-08-22_sofa_cache.json").read_bytes()),
        parse_sofa((FEEDS / "sofa_v2_macos_data_feed.json").read_bytes()).releases,
    )


def march_releases() -> list[ReleaseData]:
    """GDMF of 2026-04-12 without 26.4.x: 26.3.1 (25D2128) latest, BSI 25D771280a for it."""
    doc = json.loads((FEEDS / "gdmf_pmv_2026-04-12_raw.json").read_bytes())
    for list_name in ("AssetSets", "PublicAssetSets"):
        for platform, entries in doc[list_name].items():
            doc[list_name][platform] = [
                e for e in entries if not str(e["ProductVersion"]).startswith("26.4")
            ]
    return parse_gdmf(json.dumps(doc).encode())


RELEASES = {"august": august_releases(), "march": march_releases()}
VERSION_MODES: dict[str, dict[str, str]] = {
    "rolling": {"mode": "rolling", "within": "2w", "at": "09:00"},
    "minimum": {"mode": "minimum", "version": "26.5", "deadline": "2026-09-01", "at": "17:00"},
    "specific": {"mode": "specific", "version": "26.5.1", "deadline": "2026-09-01", "at": "17:00"},
    "do_not_manage": {"mode": "do_not_manage"},
}
BSI_MODES: dict[str, dict[str, str]] = {
    "none": {"mode": "none"},
    "automatic": {"mode": "automatic", "within": "2d", "at": "17:00"},
}
# Enforcement kinds each case must produce. 26.5.1 was not released in March: "specific" then
# has nothing to pin (and nothing to upgrade to); BSI automatic then adds the 26.3.1 (a) BSI.
REQUIRED_KINDS = {
    ("august", "rolling"): {"update", "upgrade"},
    ("august", "minimum"): {"update", "upgrade"},
    ("august", "specific"): {"update", "upgrade"},
    ("august", "do_not_manage"): {"self_service"},
    ("march", "rolling"): {"update", "upgrade"},
    ("march", "minimum"): {"update", "upgrade"},
    ("march", "specific"): set(),
    ("march", "do_not_manage"): {"self_service"},
}
DEVICES = [
    DeviceFacts(
        enrollment_id="E", os_version="26.4.1", build_version="25E253", device_id="J514mAP"
    ),
    DeviceFacts(
        enrollment_id="E", os_version="26.3.1", build_version="25D2128", device_id="J514mAP"
    ),
    DeviceFacts(enrollment_id="E", os_version="26.2", build_version="25C56", device_id=None),
    DeviceFacts(
        enrollment_id="E", os_version="26.3.1", build_version="25D2128", device_id="J700AP"
    ),
    DeviceFacts(
        enrollment_id="E", os_version="15.7.5", build_version="24G624", device_id="J514mAP"
    ),
    DeviceFacts(enrollment_id="ENROLL-1", os_version="15.7.5", device_id="J514mAP"),
    DeviceFacts(enrollment_id="E"),
]
CASES = [
    pytest.param(feed, mode, bsi, id=f"{feed}-{mode}-bsi_{bsi}")
    for feed in RELEASES
    for mode in VERSION_MODES
    for bsi in BSI_MODES
]


def library_item(mode: str, bsi: str) -> LibraryItem:
    return LibraryItem.model_validate(
        {
            "id": ITEM_ID,
            "major": 26,
            "label": f"macOS 26 {mode}",
            "blueprint_ids": ["bp"],
            "installation_method": "self_service"
            if mode == "do_not_manage"
            else "continuously_enforce",
            "version_enforcement": VERSION_MODES[mode],
            "bsi_enforcement": BSI_MODES[bsi],
            "upgrade_enforced_since": T,
            "created_at": T,
            "updated_at": T,
        }
    )


def compiled(feed: str, mode: str, bsi: str) -> list[Candidate]:
    items = [library_item(mode, bsi)]
    return compile_blueprint(items, RELEASES[feed], self_service_requests=SELF_SERVICE)


def schema_errors(declarations: list[dict[str, Any]]) -> dict[str, list[str]]:
    found = {str(d.get("Identifier")): validate_declaration(d) for d in declarations}
    return {identifier: errors for identifier, errors in found.items() if errors}


def enforcement_declaration() -> dict[str, Any]:
    """A real compiled enforcement declaration (deep copy, safe to edit)."""
    for candidate in compiled("march", "minimum", "automatic"):
        if candidate.enforcement is not None:
            return copy.deepcopy(candidate.declaration)
    raise AssertionError("the compiler produced no enforcement declaration")


@pytest.mark.parametrize(("feed", "mode", "bsi"), CASES)
def test_every_compiled_declaration_validates_against_apples_schema(feed, mode, bsi):
    candidates = compiled(feed, mode, bsi)
    kinds = {c.enforcement.kind for c in candidates if c.enforcement is not None}
    required = REQUIRED_KINDS[(feed, mode)] | (
        {"bsi"} if (feed, bsi) == ("march", "automatic") else set()
    )
    assert required <= kinds, f"missing {required - kinds}; got {kinds}"
    if mode != "do_not_manage" and (feed, mode) != ("march", "specific"):
        assert any(c.enforcement is not None and c.enforcement.kind == "update" for c in candidates)
    assert sum(c.enforcement is None for c in candidates) == 1  # the status subscriptions
    assert schema_errors([c.declaration for c in candidates]) == {}


@pytest.mark.parametrize(("feed", "mode", "bsi"), CASES)
def test_every_device_manifest_and_its_responses_validate_against_apples_schema(feed, mode, bsi):
    candidates = compiled(feed, mode, bsi)
    policy = Policy(blueprint_id="bp", revision=1, token="t", candidates=candidates)
    for facts in DEVICES:
        manifest = build_manifest(policy, facts)
        declarations = [d.to_json() for d in manifest.declarations]
        activations = [d for d in declarations if d["Type"] == ddm.ACTIVATION_SIMPLE]
        assert len(activations) == 1, facts
        configured = {d["Identifier"] for d in declarations if d["Type"] != ddm.ACTIVATION_SIMPLE}
        assert set(activations[0]["Payload"]["StandardConfigurations"]) == configured
        assert schema_errors(declarations) == {}, facts
        assert validate_items_response(manifest.items_response()) == [], facts
        tokens = ddm.TokensResponse(manifest.token, datetime.now(UTC)).to_json()
        assert validate_tokens_response(tokens) == [], facts


@pytest.mark.parametrize("mode", VERSION_MODES)
def test_bsi_automatic_on_the_march_list_targets_the_bsi_build_on_its_plain_base_version(mode):
    payloads = [c.declaration["Payload"] for c in compiled("march", mode, "automatic")]
    assert {
        "TargetOSVersion": "26.3.1",
        "TargetBuildVersion": "25D771280a",
        "TargetLocalDateTime": "2026-03-19T17:00:00",
    } in payloads


def test_a_mac_on_the_bsi_prerequisite_build_gets_the_bsi_in_a_valid_manifest():
    policy = Policy(
        blueprint_id="bp",
        revision=1,
        token="t",
        candidates=compiled("march", "minimum", "automatic"),
    )
    facts = DeviceFacts(
        enrollment_id="E", os_version="26.3.1", build_version="25D2128", device_id="J514mAP"
    )
    declarations = [d.to_json() for d in build_manifest(policy, facts).declarations]
    builds = [d["Payload"].get("TargetBuildVersion") for d in declarations]
    assert "25D771280a" in builds
    assert schema_errors(declarations) == {}


def test_apples_own_example_declarations_validate():
    examples = sorted((APPLE_DATA / "declarative" / "declarations").rglob("example*.json"))
    checked = 0
    for path in examples:
        if path.parent.name in {"softwareupdate.settings", "server-capabilities"}:
            continue  # no schema copied for these types
        assert validate_declaration(json.loads(path.read_text())) == [], path
        checked += 1
    assert checked == 4


def test_a_payload_without_target_local_date_time_is_rejected():
    declaration = enforcement_declaration()
    del declaration["Payload"]["TargetLocalDateTime"]
    errors = validate_declaration(declaration)
    assert any("'TargetLocalDateTime' is missing" in e for e in errors), errors


def test_a_target_local_date_time_with_a_utc_offset_is_rejected():
    declaration = enforcement_declaration()
    declaration["Payload"]["TargetLocalDateTime"] = "2026-09-01T17:00:00Z"
    errors = validate_declaration(declaration)
    assert any("TargetLocalDateTime" in e for e in errors), errors


def test_a_target_local_date_time_with_fractional_seconds_is_rejected():
    declaration = enforcement_declaration()
    declaration["Payload"]["TargetLocalDateTime"] = "2026-09-01T17:00:00.000"
    assert validate_declaration(declaration) != []


def test_a_target_os_version_carrying_a_bsi_letter_is_rejected():
    declaration = enforcement_declaration()
    declaration["Payload"]["TargetOSVersion"] = "26.3.1 (a)"
    errors = validate_declaration(declaration)
    assert any("TargetOSVersion" in e for e in errors), errors


def test_a_payload_key_the_schema_does_not_define_is_rejected():
    declaration = enforcement_declaration()
    declaration["Payload"]["TargetVersion"] = "26.3.1"
    errors = validate_declaration(declaration)
    assert any("'TargetVersion' is not defined" in e for e in errors), errors


def test_a_target_os_version_of_the_wrong_type_is_rejected():
    declaration = enforcement_declaration()
    declaration["Payload"]["TargetOSVersion"] = 26
    errors = validate_declaration(declaration)
    assert any("TargetOSVersion: expected <string>, got int" in e for e in errors), errors


def test_an_identifier_longer_than_64_octets_is_rejected():
    declaration = enforcement_declaration()
    declaration["Identifier"] = "é" * 33  # 33 characters, 66 octets
    errors = validate_declaration(declaration)
    assert any("Identifier: 66 UTF-8 octets" in e for e in errors), errors


def test_an_envelope_missing_its_server_token_or_with_an_extra_key_is_rejected():
    declaration = enforcement_declaration()
    del declaration["ServerToken"]
    declaration["Version"] = 1
    errors = validate_declaration(declaration)
    assert any("'ServerToken' is missing" in e for e in errors), errors
    assert any("'Version' is not defined" in e for e in errors), errors


def test_a_declaration_type_without_an_apple_schema_is_rejected():
    declaration = enforcement_declaration()
    declaration["Type"] = "com.apple.configuration.softwareupdate.enforcement.latest"
    assert any("no Apple schema" in e for e in validate_declaration(declaration))


def test_a_status_subscription_item_without_a_name_is_rejected():
    declaration = ddm.status_subscriptions("subs", ["device.model.family"]).to_json()
    declaration["Payload"]["StatusItems"].append({"name": "device.model.identifier"})
    errors = validate_declaration(declaration)
    assert any("StatusItems[1]: required key 'Name' is missing" in e for e in errors), errors


def test_an_items_response_missing_a_category_or_with_a_bad_item_is_rejected():
    response = ddm.DeclarationItemsResponse.for_items([]).to_json()
    del response["Declarations"]["Assets"]
    response["Declarations"]["Configurations"].append({"Identifier": "x", "ServerToken": 7})
    errors = validate_items_response(response)
    assert any("'Assets' is missing" in e for e in errors), errors
    assert any("Configurations[0].ServerToken: expected <string>" in e for e in errors), errors


def test_a_tokens_response_timestamp_with_an_offset_is_rejected():
    response = {"SyncTokens": {"DeclarationsToken": "t", "Timestamp": "2026-08-26T12:00:00+02:00"}}
    assert validate_tokens_response(response) != []
    assert validate_tokens_response({"SyncTokens": {"Timestamp": "2026-08-26T12:00:00Z"}}) != []


def test_rangelist_format_and_array_item_types_from_a_schema_are_enforced():
    specs = [
        {"key": "Mode", "type": "<string>", "presence": "required", "rangelist": ["a", "b"]},
        {"key": "Code", "type": "<string>", "presence": "optional", "format": "^[0-9]+$"},
        {"key": "Count", "type": "<integer>", "presence": "optional"},
        {"key": "Ids", "type": "<array>", "subkeys": [{"key": "Id", "type": "<string>"}]},
    ]
    assert validate_keys({"Mode": "a", "Code": "12", "Count": 3, "Ids": ["x"]}, specs, "v") == []
    errors = validate_keys({"Mode": "c", "Code": "1x", "Count": True, "Ids": [1]}, specs, "v")
    assert len(errors) == 4, errors
