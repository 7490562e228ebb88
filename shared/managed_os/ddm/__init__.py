"""Apple Declarative Device Management: wire types, parsers and builders. Pure: no I/O.

Everything here follows Apple's `apple/device-management` schema; each module names the schema
file it implements. Malformed input from a device raises `DDMProtocolError` (a `ValueError`);
a declaration we would build wrongly raises `InvalidDeclaration`.
"""

from managed_os.ddm.builders import (
    ACTIVATION_SIMPLE,
    ENFORCEMENT_SPECIFIC,
    STATUS_SUBSCRIPTIONS,
    activation_simple,
    format_local_datetime,
    softwareupdate_enforcement,
    status_subscriptions,
)
from managed_os.ddm.categories import Category, ManifestItem, category_for_type
from managed_os.ddm.checkin import (
    CheckIn,
    DeclarativeCheckIn,
    DeclarativeManagementCommand,
    Endpoint,
    EndpointKind,
    declarative_management_command,
    parse_checkin,
    parse_declarative_checkin,
    parse_declarative_management_command,
    parse_endpoint,
)
from managed_os.ddm.codec import canonical_json, encode_json
from managed_os.ddm.declarations import Declaration, server_token
from managed_os.ddm.errors import DDMProtocolError, InvalidDeclaration
from managed_os.ddm.merge import KNOWN_ITEMS, flatten_status, merge_status, unflatten_status
from managed_os.ddm.status import StatusReport, StatusView, parse_status_report
from managed_os.ddm.status_values import (
    INSTALL_STATES,
    DeclarationStatus,
    FailureReason,
    InstallReason,
    PendingVersion,
    StatusError,
    StatusReason,
)
from managed_os.ddm.tokens import (
    DeclarationItemsResponse,
    TokensResponse,
    declarations_token,
    format_timestamp,
    parse_declaration_items_response,
    parse_tokens_response,
)

__all__ = [
    "ACTIVATION_SIMPLE",
    "ENFORCEMENT_SPECIFIC",
    "INSTALL_STATES",
    "KNOWN_ITEMS",
    "STATUS_SUBSCRIPTIONS",
    "Category",
    "CheckIn",
    "DDMProtocolError",
    "Declaration",
    "DeclarationItemsResponse",
    "DeclarationStatus",
    "DeclarativeCheckIn",
    "DeclarativeManagementCommand",
    "Endpoint",
    "EndpointKind",
    "FailureReason",
    "InstallReason",
    "InvalidDeclaration",
    "ManifestItem",
    "PendingVersion",
    "StatusError",
    "StatusReason",
    "StatusReport",
    "StatusView",
    "TokensResponse",
    "activation_simple",
    "canonical_json",
    "category_for_type",
    "declarations_token",
    "declarative_management_command",
    "encode_json",
    "flatten_status",
    "format_local_datetime",
    "format_timestamp",
    "merge_status",
    "parse_checkin",
    "parse_declaration_items_response",
    "parse_declarative_checkin",
    "parse_declarative_management_command",
    "parse_endpoint",
    "parse_status_report",
    "parse_tokens_response",
    "server_token",
    "softwareupdate_enforcement",
    "status_subscriptions",
    "unflatten_status",
]
