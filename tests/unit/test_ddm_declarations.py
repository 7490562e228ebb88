"""Declarations, server tokens and the manifest (managed_os.ddm declarations/builders/tokens)."""

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from managed_os.ddm import (
    ACTIVATION_SIMPLE,
    ENFORCEMENT_SPECIFIC,
    STATUS_SUBSCRIPTIONS,
    Category,
    DDMProtocolError,
    Declaration,
    DeclarationItemsResponse,
    InvalidDeclaration,
    ManifestItem,
    TokensResponse,
    activation_simple,
    category_for_type,
    declarations_token,
    parse_declaration_items_response,
    parse_tokens_response,
    server_token,
    softwareupdate_enforcement,
    status_subscriptions,
)
from managed_os.versions import parse_build, parse_version

APPLE = Path(__file__).resolve().parent.parent / "data" / "apple"
DECLARATIONS = APPLE / "declarative" / "declarations"
DEADLINE = datetime(2026, 4, 1, 9, 30)


def apple_example(relative: str) -> dict:
    return json.loads((DECLARATIONS / relative).read_text())


@pytest.mark.parametrize(
    ("declaration_type", "category"),
    [
        ("com.apple.configuration.softwareupdate.enforcement.specific", Category.CONFIGURATION),
        ("com.apple.activation.simple", Category.ACTIVATION),
        ("com.apple.asset.data", Category.ASSET),
        ("com.apple.management.server-capabilities", Category.MANAGEMENT),
        ("com.apple.legacy", None),
        ("com.example.configuration.thing", None),
        ("com.apple.configuration", None),
        ("com.apple.configuration.", None),
    ],
)
def test_the_category_comes_from_the_declaration_type(declaration_type, category):
    assert category_for_type(declaration_type) == category


@pytest.mark.parametrize(
    "relative",
    [
        "configurations/softwareupdate.enforcement.specific/example1.json",
        "configurations/softwareupdate.settings/example1.json",
        "configurations/management.status-subscriptions/example1.json",
        "activations/simple/example1.json",
        "activations/simple/example2.json",
        "management/server-capabilities/example1.json",
    ],
)
def test_apple_example_declarations_round_trip_through_the_envelope(relative):
    raw = apple_example(relative)
    declaration = Declaration.from_json(json.dumps(raw).encode())
    assert declaration.to_json() == raw
    assert declaration.server_token == raw["ServerToken"]
    assert not declaration.token_is_current  # Apple's examples use random UUID tokens


def test_the_enforcement_example_exposes_its_type_category_and_payload():
    declaration = Declaration.from_json(
        apple_example("configurations/softwareupdate.enforcement.specific/example1.json")
    )
    assert declaration.type == ENFORCEMENT_SPECIFIC
    assert declaration.category is Category.CONFIGURATION
    assert declaration.payload["TargetOSVersion"] == "26.0"
    assert declaration.manifest_item == ManifestItem(
        Category.CONFIGURATION,
        "EB13EE2B-5D63-4EBA-810F-5B81D07F5017",
        "E180CA9A-F089-4FA3-BBDF-94CC159C4AE8",
    )


def test_the_enforcement_builder_reproduces_apples_example_payload():
    raw = apple_example("configurations/softwareupdate.enforcement.specific/example1.json")
    built = softwareupdate_enforcement(
        raw["Identifier"], "26.0", datetime(2025, 9, 21, 1, 0), target_build_version="23A309"
    )
    assert built.to_json() == {**raw, "ServerToken": built.server_token}
    assert built.token_is_current


def test_the_server_token_is_the_sha256_of_canonical_json_of_type_identifier_and_payload():
    payload = {"b": 1, "a": "é"}
    expected_input = '{"Identifier":"id-1","Payload":{"a":"é","b":1},"Type":"com.apple.x.y"}'
    assert (
        server_token("com.apple.x.y", "id-1", payload)
        == hashlib.sha256(expected_input.encode()).hexdigest()
    )
    assert len(server_token("com.apple.x.y", "id-1", payload)) == 64


def test_the_token_does_not_depend_on_payload_key_order():
    first = Declaration.build(ENFORCEMENT_SPECIFIC, "id", {"A": 1, "B": 2})
    second = Declaration.build(ENFORCEMENT_SPECIFIC, "id", {"B": 2, "A": 1})
    assert first.server_token == second.server_token


def test_the_token_changes_when_the_payload_changes_and_not_otherwise():
    first = softwareupdate_enforcement("cfg-26", "26.3", DEADLINE)
    same = softwareupdate_enforcement("cfg-26", "26.3", DEADLINE)
    later = softwareupdate_enforcement("cfg-26", "26.3", DEADLINE + timedelta(days=1))
    newer = softwareupdate_enforcement("cfg-26", "26.3.1", DEADLINE)
    renamed = softwareupdate_enforcement("cfg-26b", "26.3", DEADLINE)
    assert first.server_token == same.server_token
    tokens = {first.server_token, later.server_token, newer.server_token, renamed.server_token}
    assert len(tokens) == 4


@settings(database=None)
@given(st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=4))
def test_any_payload_change_changes_the_token(payload):
    token = server_token(ENFORCEMENT_SPECIFIC, "id", payload)
    assert server_token(ENFORCEMENT_SPECIFIC, "id", dict(payload)) == token
    changed = {**payload, "extra-key": True}
    assert server_token(ENFORCEMENT_SPECIFIC, "id", changed) != token


def test_the_enforcement_builder_formats_the_local_deadline_without_zone_or_fraction():
    built = softwareupdate_enforcement(
        "cfg",
        parse_version("26.3.1"),
        datetime(2026, 4, 1, 9, 30, 15, 999),
        target_build_version=parse_build("25D2128"),
        details_url="https://example.com/updates",
    )
    assert built.payload == {
        "TargetOSVersion": "26.3.1",
        "TargetBuildVersion": "25D2128",
        "TargetLocalDateTime": "2026-04-01T09:30:15",
        "DetailsURL": "https://example.com/updates",
    }


def test_the_enforcement_builder_refuses_a_bsi_letter_in_the_target_version():
    with pytest.raises(InvalidDeclaration, match=r"26\.3\.1 \(a\).*BSI"):
        softwareupdate_enforcement("cfg", "26.3.1 (a)", DEADLINE)


def test_a_bsi_is_pinned_with_its_supplemental_build_instead():
    built = softwareupdate_enforcement("cfg", "26.3.1", DEADLINE, "25D771280a")
    assert built.payload["TargetOSVersion"] == "26.3.1"
    assert built.payload["TargetBuildVersion"] == "25D771280a"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_os_version": "26..1"}, "invalid macOS version"),
        ({"target_build_version": "bogus"}, "invalid build"),
        ({"target_local_datetime": datetime(2026, 4, 1, tzinfo=UTC)}, "naive"),
        ({"details_url": "ftp://example.com"}, "DetailsURL"),
        ({"identifier": ""}, "Identifier: must not be empty"),
        ({"identifier": "x" * 65}, "64 octets"),
    ],
)
def test_the_enforcement_builder_refuses_bad_input_with_a_clear_message(kwargs, message):
    arguments = {
        "identifier": "cfg",
        "target_os_version": "26.3",
        "target_local_datetime": DEADLINE,
        **kwargs,
    }
    with pytest.raises(InvalidDeclaration, match=message):
        softwareupdate_enforcement(**arguments)


def test_status_subscriptions_list_each_name_once_in_a_stable_order():
    first = status_subscriptions("subs", ["softwareupdate.install-state", "device.model.family"])
    second = status_subscriptions(
        "subs", ["device.model.family", "softwareupdate.install-state", "device.model.family"]
    )
    assert first.type == STATUS_SUBSCRIPTIONS
    assert first.payload == {
        "StatusItems": [{"Name": "device.model.family"}, {"Name": "softwareupdate.install-state"}]
    }
    assert first.server_token == second.server_token
    with pytest.raises(InvalidDeclaration):
        status_subscriptions("subs", ["has space"])


def test_the_simple_activation_lists_configurations_and_an_optional_predicate():
    plain = activation_simple("act", ["cfg-b", "cfg-a"])
    assert plain.type == ACTIVATION_SIMPLE
    assert plain.category is Category.ACTIVATION
    assert plain.payload == {"StandardConfigurations": ["cfg-a", "cfg-b"]}
    with_predicate = activation_simple("act", ["cfg-a"], "@status(device.model.family) == 'Mac'")
    assert with_predicate.payload["Predicate"] == "@status(device.model.family) == 'Mac'"


def test_declarations_with_a_foreign_type_or_missing_keys_are_protocol_errors():
    with pytest.raises(DDMProtocolError, match="Type"):
        Declaration.from_json(
            {"Type": "com.example.x", "Identifier": "i", "ServerToken": "t", "Payload": {}}
        )
    with pytest.raises(DDMProtocolError, match="Payload"):
        Declaration.from_json({"Type": ENFORCEMENT_SPECIFIC, "Identifier": "i", "ServerToken": "t"})
    with pytest.raises(DDMProtocolError, match="not valid JSON"):
        Declaration.from_json(b"{")


def test_to_json_returns_a_copy_the_caller_may_change():
    declaration = activation_simple("act", ["cfg-a"])
    copy = declaration.to_json()
    copy["Payload"]["StandardConfigurations"].append("cfg-z")
    assert declaration.payload == {"StandardConfigurations": ["cfg-a"]}


MANIFEST = [
    ("configuration", "cfg-su", "t1"),
    ("activation", "act", "t2"),
    ("configuration", "cfg-subs", "t3"),
]


def test_the_declarations_token_does_not_depend_on_item_order():
    assert declarations_token(MANIFEST) == declarations_token(list(reversed(MANIFEST)))
    as_items = [ManifestItem(Category(c), i, t) for c, i, t in MANIFEST]
    assert declarations_token(as_items) == declarations_token(MANIFEST)


@settings(database=None)
@given(st.permutations(MANIFEST))
def test_every_order_of_the_manifest_gives_the_same_declarations_token(order):
    assert declarations_token(order) == declarations_token(MANIFEST)


@pytest.mark.parametrize(
    "changed",
    [
        [*MANIFEST, ("management", "props", "t4")],
        MANIFEST[:2],
        [*MANIFEST[:2], ("configuration", "cfg-subs", "t3-new")],
        [*MANIFEST[:2], ("asset", "cfg-subs", "t3")],
        [],
    ],
    ids=["added", "removed", "token-changed", "category-changed", "emptied"],
)
def test_the_declarations_token_changes_when_the_manifest_changes(changed):
    assert declarations_token(changed) != declarations_token(MANIFEST)


def test_an_unknown_category_in_the_manifest_is_refused():
    with pytest.raises(ValueError, match="configurations"):
        declarations_token([("configurations", "cfg", "t")])


def test_the_tokens_response_has_apples_shape_and_reads_back():
    stamp = datetime(2026, 3, 1, 13, 0, 5, 123, tzinfo=timezone(timedelta(hours=1)))
    response = TokensResponse("abc", stamp)
    body = response.to_json()
    assert body == {"SyncTokens": {"DeclarationsToken": "abc", "Timestamp": "2026-03-01T12:00:05Z"}}
    parsed = parse_tokens_response(json.dumps(body).encode())
    assert parsed.declarations_token == "abc"
    assert parsed.timestamp == datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC)


def test_a_tokens_response_needs_an_aware_timestamp():
    with pytest.raises(ValueError, match="time-zone-aware"):
        TokensResponse("abc", datetime(2026, 3, 1)).to_json()
    with pytest.raises(DDMProtocolError, match="no time zone"):
        parse_tokens_response(
            {"SyncTokens": {"DeclarationsToken": "a", "Timestamp": "2026-03-01T12:00:00"}}
        )
    with pytest.raises(DDMProtocolError, match="SyncTokens must be an object"):
        parse_tokens_response({"SyncTokens": []})


def test_the_declaration_items_response_groups_items_by_category_in_apples_shape():
    response = DeclarationItemsResponse.for_items(MANIFEST)
    body = response.to_json()
    assert body == {
        "Declarations": {
            "Activations": [{"Identifier": "act", "ServerToken": "t2"}],
            "Assets": [],
            "Configurations": [
                {"Identifier": "cfg-su", "ServerToken": "t1"},
                {"Identifier": "cfg-subs", "ServerToken": "t3"},
            ],
            "Management": [],
        },
        "DeclarationsToken": declarations_token(MANIFEST),
    }
    parsed = parse_declaration_items_response(json.dumps(body))
    assert parsed == response
    assert declarations_token(parsed.items) == parsed.declarations_token


def test_a_malformed_declaration_items_response_names_the_bad_element():
    body = {
        "Declarations": {"Configurations": [{"Identifier": "cfg"}]},
        "DeclarationsToken": "x",
    }
    with pytest.raises(DDMProtocolError, match=r"Declarations\.Configurations\[0\]\.ServerToken"):
        parse_declaration_items_response(body)
