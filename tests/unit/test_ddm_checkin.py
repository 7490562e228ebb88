"""Check-in plists and the DeclarativeManagement command (managed_os.ddm.checkin)."""

import json
import plistlib
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from managed_os.ddm import (
    Category,
    DDMProtocolError,
    Endpoint,
    EndpointKind,
    TokensResponse,
    declarative_management_command,
    parse_checkin,
    parse_declarative_checkin,
    parse_declarative_management_command,
    parse_endpoint,
)
from managed_os.versions import OSVersion

COMMANDS = (
    Path(__file__).resolve().parent.parent
    / "data"
    / "apple"
    / "mdm"
    / "commands"
    / "declarativemanagement"
)
APPLE_TOKEN = "b6544027a315cd0085d4cf08174624c2d14244480430a87b176a2727e7366138"


def checkin_body(**keys: object) -> bytes:
    message = {"MessageType": "DeclarativeManagement", "UDID": str(uuid.uuid4()), **keys}
    return plistlib.dumps({k: v for k, v in message.items() if v is not None})


def test_apples_command_example_decodes_to_a_tokens_response():
    command = parse_declarative_management_command((COMMANDS / "example1.plist").read_bytes())
    assert command.command_uuid == "0001_DeclarativeManagement"
    tokens = command.tokens_response()
    assert tokens is not None
    assert tokens.declarations_token == APPLE_TOKEN
    assert tokens.timestamp == datetime(2021, 6, 2, 1, 28, tzinfo=UTC)


def test_a_command_we_build_decodes_back_to_its_tokens():
    tokens = TokensResponse("abc123", datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    body = declarative_management_command(tokens.to_json(), "cmd-1")
    raw = plistlib.loads(body)
    assert raw["CommandUUID"] == "cmd-1"
    assert raw["Command"]["RequestType"] == "DeclarativeManagement"
    assert json.loads(raw["Command"]["Data"]) == tokens.to_json()
    command = parse_declarative_management_command(body)
    assert command.command_uuid == "cmd-1"
    assert command.tokens_response() == tokens
    assert declarative_management_command(tokens, "cmd-1") == body


def test_a_command_acknowledgement_is_not_a_command():
    with pytest.raises(DDMProtocolError, match="Command must be an object, not null"):
        parse_declarative_management_command((COMMANDS / "example2.plist").read_bytes())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tokens", Endpoint(EndpointKind.TOKENS)),
        ("declaration-items", Endpoint(EndpointKind.DECLARATION_ITEMS)),
        ("status", Endpoint(EndpointKind.STATUS)),
        (
            "declaration/configuration/EB13EE2B-5D63-4EBA-810F-5B81D07F5017",
            Endpoint(
                EndpointKind.DECLARATION,
                Category.CONFIGURATION,
                "EB13EE2B-5D63-4EBA-810F-5B81D07F5017",
            ),
        ),
        (
            "declaration/activation/act",
            Endpoint(EndpointKind.DECLARATION, Category.ACTIVATION, "act"),
        ),
        ("declaration/asset/a", Endpoint(EndpointKind.DECLARATION, Category.ASSET, "a")),
        ("declaration/management/m", Endpoint(EndpointKind.DECLARATION, Category.MANAGEMENT, "m")),
    ],
)
def test_endpoints_parse_into_kind_category_and_identifier(text, expected):
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "unknown Endpoint ''"),
        ("Tokens", "unknown Endpoint"),
        ("declaration/configuration", "unknown Endpoint"),
        ("declaration/configurations/cfg", "unknown category 'configurations'"),
        ("declaration/configuration/", "no declaration identifier"),
        ("declarations/configuration/cfg", "unknown Endpoint"),
    ],
)
def test_bad_endpoints_are_refused_with_a_readable_message(text, message):
    with pytest.raises(DDMProtocolError, match=message):
        parse_endpoint(text)


def test_a_device_channel_checkin_is_identified_by_its_udid():
    body = checkin_body(UDID="0000FE00-1234", Endpoint="tokens")
    request = parse_declarative_checkin(body)
    assert request.enrollment_id == "0000FE00-1234"
    assert not request.is_user_channel
    assert request.endpoint == Endpoint(EndpointKind.TOKENS)
    assert request.checkin.data is None


def test_a_user_enrollment_checkin_is_identified_by_its_enrollment_id():
    body = checkin_body(
        UDID=None, EnrollmentID="ENR-1", EnrollmentUserID="USR-1", Endpoint="tokens"
    )
    checkin = parse_checkin(body)
    assert checkin.enrollment_id == "ENR-1"
    assert checkin.enrollment_user_id == "USR-1"
    assert checkin.is_user_channel


def test_a_mac_user_channel_checkin_without_enrollment_user_id_is_still_a_user_channel():
    body = checkin_body(UserShortName="alice", UserID="501-ABC", Endpoint="declaration-items")
    assert parse_checkin(body).is_user_channel


def test_a_status_checkin_carries_a_status_report_in_its_data():
    report = {
        "StatusItems": {"device": {"operating-system": {"version": "26.3.1"}}},
        "Errors": [],
    }
    body = checkin_body(Endpoint="status", Data=json.dumps(report).encode())
    request = parse_declarative_checkin(body)
    assert request.endpoint.kind is EndpointKind.STATUS
    assert request.status_report().os_version == OSVersion(26, 3, 1)


def test_a_status_checkin_without_data_is_refused():
    with pytest.raises(DDMProtocolError, match="status check-in has no Data"):
        parse_declarative_checkin(checkin_body(Endpoint="status"))


def test_only_a_status_checkin_has_a_status_report():
    request = parse_declarative_checkin(checkin_body(Endpoint="tokens"))
    with pytest.raises(DDMProtocolError, match="only a status check-in"):
        request.status_report()


def test_a_status_checkin_with_malformed_json_data_is_a_protocol_error():
    request = parse_declarative_checkin(checkin_body(Endpoint="status", Data=b"{oops"))
    with pytest.raises(DDMProtocolError, match="status report is not valid JSON"):
        request.status_report()


def test_other_message_types_are_parsed_but_not_accepted_as_declarative():
    body = checkin_body(MessageType="TokenUpdate", Endpoint=None)
    assert parse_checkin(body).message_type == "TokenUpdate"
    with pytest.raises(DDMProtocolError, match="MessageType is 'TokenUpdate'"):
        parse_declarative_checkin(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not a plist", "check-in is not a valid property list"),
        (b"<?xml version='1.0'?><plist><dict><key>A</key></plist>", "not a valid property list"),
        (plistlib.dumps(["MessageType"]), "check-in must be a dictionary, not list"),
        (plistlib.dumps({"UDID": "x"}), "MessageType must be a string, not null"),
        (plistlib.dumps({"MessageType": "DeclarativeManagement"}), "neither UDID nor EnrollmentID"),
        (checkin_body(Endpoint=None), "has no Endpoint"),
        (checkin_body(Endpoint=7), "Endpoint must be a string, not an integer"),
        (checkin_body(Endpoint="status", Data="eyJ9"), "Data must be <data>, not a string"),
    ],
)
def test_malformed_checkins_raise_a_protocol_error_saying_what_is_wrong(body, message):
    with pytest.raises(DDMProtocolError, match=message):
        parse_declarative_checkin(body)
