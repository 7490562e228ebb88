"""MDM check-ins and the `DeclarativeManagement` command, as property lists.

Schemas: `mdm/checkin/declarativemanagement.yaml` (check-in keys and `Endpoint` values) and
`mdm/commands/declarativemanagement.yaml` (command whose `Data` is a `TokensResponse`).
"""

from __future__ import annotations

import plistlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from managed_os.ddm.categories import Category
from managed_os.ddm.codec import encode_json, expect, optional
from managed_os.ddm.errors import DDMProtocolError
from managed_os.ddm.status import StatusReport, parse_status_report
from managed_os.ddm.tokens import TokensResponse

DECLARATIVE_MANAGEMENT = "DeclarativeManagement"


class EndpointKind(StrEnum):
    TOKENS = "tokens"
    DECLARATION_ITEMS = "declaration-items"
    STATUS = "status"
    DECLARATION = "declaration"


@dataclass(frozen=True)
class Endpoint:
    """A parsed `Endpoint`; `category` and `identifier` are set only for `declaration/…/…`."""

    kind: EndpointKind
    category: Category | None = None
    identifier: str | None = None


def parse_endpoint(text: str) -> Endpoint:
    """`tokens`, `declaration-items`, `status` or `declaration/<category>/<Identifier>`, with
    the category singular (`activation`, `asset`, `configuration`, `management`)."""
    if text in (EndpointKind.TOKENS, EndpointKind.DECLARATION_ITEMS, EndpointKind.STATUS):
        return Endpoint(EndpointKind(text))
    parts = text.split("/", 2)
    if len(parts) != 3 or parts[0] != EndpointKind.DECLARATION:
        raise DDMProtocolError(
            f"unknown Endpoint {text!r}: expected tokens, declaration-items, status or "
            "declaration/<category>/<identifier>"
        )
    try:
        category = Category(parts[1])
    except ValueError:
        raise DDMProtocolError(
            f"Endpoint {text!r} has unknown category {parts[1]!r}: expected one of "
            + ", ".join(c.value for c in Category)
        ) from None
    if not parts[2]:
        raise DDMProtocolError(f"Endpoint {text!r} has no declaration identifier")
    return Endpoint(EndpointKind.DECLARATION, category, parts[2])


def _load_plist(body: bytes, what: str) -> dict[str, Any]:
    try:
        value = plistlib.loads(body)
    except Exception as exc:  # plistlib raises many types (expat, ValueError, ...) on bad input
        raise DDMProtocolError(f"{what} is not a valid property list: {exc}") from exc
    if not isinstance(value, dict):
        raise DDMProtocolError(f"{what} must be a dictionary, not {type(value).__name__}")
    return value


@dataclass(frozen=True)
class CheckIn:
    """A check-in message. `user_enrollment_id` is the `EnrollmentID` key (the device's id under
    User Enrollment); `enrollment_user_id`, `user_id` and `user_short_name` come only on the
    user channel; `data` is the decoded `<data>` payload."""

    message_type: str
    udid: str | None = None
    user_enrollment_id: str | None = None
    enrollment_user_id: str | None = None
    user_id: str | None = None
    user_short_name: str | None = None
    endpoint: str | None = None
    data: bytes | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def enrollment_id(self) -> str:
        """`UDID` (device enrollment) or else `EnrollmentID` (User Enrollment)."""
        return self.udid or self.user_enrollment_id or ""

    @property
    def is_user_channel(self) -> bool:
        """True for a user-channel check-in: `EnrollmentUserID`, `UserID` and `UserShortName`
        are never sent on the device channel (`devicechannel: false` in the schema)."""
        return any((self.enrollment_user_id, self.user_id, self.user_short_name))


def parse_checkin(body: bytes) -> CheckIn:
    """Any check-in plist; needs `MessageType` and `UDID` or `EnrollmentID`."""
    data = _load_plist(body, "check-in")
    checkin = CheckIn(
        message_type=expect(data.get("MessageType"), str, "MessageType"),
        udid=optional(data, "UDID", str, ""),
        user_enrollment_id=optional(data, "EnrollmentID", str, ""),
        enrollment_user_id=optional(data, "EnrollmentUserID", str, ""),
        user_id=optional(data, "UserID", str, ""),
        user_short_name=optional(data, "UserShortName", str, ""),
        endpoint=optional(data, "Endpoint", str, ""),
        data=optional(data, "Data", bytes, ""),
        raw=data,
    )
    if not checkin.enrollment_id:
        raise DDMProtocolError("check-in has neither UDID nor EnrollmentID")
    return checkin


@dataclass(frozen=True)
class DeclarativeCheckIn:
    """A `DeclarativeManagement` check-in with its `Endpoint` parsed."""

    checkin: CheckIn
    endpoint: Endpoint

    @property
    def enrollment_id(self) -> str:
        return self.checkin.enrollment_id

    @property
    def is_user_channel(self) -> bool:
        return self.checkin.is_user_channel

    def status_report(self) -> StatusReport:
        """The `StatusReport` carried in `Data` of a `status` check-in."""
        if self.endpoint.kind is not EndpointKind.STATUS or self.checkin.data is None:
            raise DDMProtocolError("only a status check-in carries a StatusReport in Data")
        return parse_status_report(self.checkin.data)


def parse_declarative_checkin(body: bytes) -> DeclarativeCheckIn:
    """A check-in that must be `DeclarativeManagement` with a valid `Endpoint`; a `status`
    check-in must carry `Data`. Raises `DDMProtocolError` otherwise."""
    checkin = parse_checkin(body)
    if checkin.message_type != DECLARATIVE_MANAGEMENT:
        raise DDMProtocolError(
            f"MessageType is {checkin.message_type!r}, expected {DECLARATIVE_MANAGEMENT!r}"
        )
    if checkin.endpoint is None:
        raise DDMProtocolError("DeclarativeManagement check-in has no Endpoint")
    endpoint = parse_endpoint(checkin.endpoint)
    if endpoint.kind is EndpointKind.STATUS and checkin.data is None:
        raise DDMProtocolError("status check-in has no Data (a StatusReport is required)")
    return DeclarativeCheckIn(checkin, endpoint)


def declarative_management_command(
    tokens_response: Mapping[str, Any] | TokensResponse, command_uuid: str
) -> bytes:
    """XML plist of the MDM command `{"CommandUUID", "Command": {"RequestType":
    "DeclarativeManagement", "Data": <TokensResponse JSON>}}`; the device skips the `tokens`
    request when `Data` is present."""
    tokens = (
        tokens_response.to_json()
        if isinstance(tokens_response, TokensResponse)
        else dict(tokens_response)
    )
    command = {"RequestType": DECLARATIVE_MANAGEMENT, "Data": encode_json(tokens)}
    return plistlib.dumps({"Command": command, "CommandUUID": command_uuid})


@dataclass(frozen=True)
class DeclarativeManagementCommand:
    command_uuid: str
    data: bytes | None

    def tokens_response(self) -> TokensResponse | None:
        return None if self.data is None else TokensResponse.from_json(self.data)


def parse_declarative_management_command(body: bytes) -> DeclarativeManagementCommand:
    """Read back a `DeclarativeManagement` command plist. Apple's own example nests
    `{"CommandUUID", "Command"}` one level down, inside `Command`; both layouts are accepted."""
    data = _load_plist(body, "command")
    outer = expect(data.get("Command"), dict, "Command")
    if "RequestType" not in outer and isinstance(outer.get("Command"), dict):
        data, outer = outer, outer["Command"]
    request_type = expect(outer.get("RequestType"), str, "Command.RequestType")
    if request_type != DECLARATIVE_MANAGEMENT:
        raise DDMProtocolError(
            f"RequestType is {request_type!r}, expected {DECLARATIVE_MANAGEMENT!r}"
        )
    return DeclarativeManagementCommand(
        command_uuid=expect(data.get("CommandUUID"), str, "CommandUUID"),
        data=optional(outer, "Data", bytes, "Command"),
    )
