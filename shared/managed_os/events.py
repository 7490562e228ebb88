"""Event contracts: every topic, type name and payload model of the suite, in one place.

Payloads are versioned pydantic models (the `.v1` in the type name); a breaking change adds
a new type rather than altering one. Keys: releases by build, policies by blueprint id,
device events by enrollment id, so each entity's events stay in order on one partition.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from managed_os.cloudevents import CloudEvent, EnvelopeError
from managed_os.policy import Candidate, DeviceFacts, ExpectedEnforcement, PolicyItem

TOPIC_RELEASES = "managed-os.catalog.releases.v1"
TOPIC_POLICIES = "managed-os.declarations.policies.v1"
TOPIC_DEVICES = "managed-os.devices.v1"
TOPIC_COMPLIANCE = "managed-os.compliance.v1"
ALL_TOPICS = (TOPIC_RELEASES, TOPIC_POLICIES, TOPIC_DEVICES, TOPIC_COMPLIANCE)


class EventPayload(BaseModel):
    """Times a device or compliance event carries are RFC 3339 with an offset
    (`AwareDatetime`): a consumer compares them with stored times, and one without an
    offset failed its whole batch on every redelivery; it is now an invalid event, skipped."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    TYPE: ClassVar[str]
    TOPIC: ClassVar[str]


class ReleaseData(BaseModel):
    """One macOS release (an OS update or a BSI), as the catalog knows it.

    `build` is None for a release known only by version (SOFA lists old releases without
    builds). `supported_devices` are board ids; `devices_known` is False when no source gave a
    device list for this release (it then supports what its major supports, never "every
    device"). `release_date` is the earliest date any trusted list gave. `listed_by_apple` says
    whether GDMF's latest good response lists it (only listed releases can be enforced; None
    when the GDMF source is off); `expired` is judged by the reader against its clock. `cves`
    is Apple's count of CVEs the release fixes.
    """

    model_config = ConfigDict(frozen=True)

    version: str
    extra: str | None = None
    build: str | None
    prerequisite_build: str | None = None
    kind: Literal["major", "update", "bsi"]
    major: int
    major_name: str | None = None
    release_date: date | None = None
    expiration_date: date | None = None
    expired: bool = False
    listed_by_apple: bool | None = None
    supported_devices: list[str] = Field(default_factory=list)
    devices_known: bool = False
    cves: int | None = None
    exploited_cves: list[str] = Field(default_factory=list)
    security_info: str | None = None
    sources: list[str] = Field(default_factory=list)
    first_seen: datetime | None = None


class ReleasePublished(EventPayload):
    TYPE = "com.managed-os.catalog.release-published.v1"
    TOPIC = TOPIC_RELEASES
    release: ReleaseData


class ReleaseUpdated(EventPayload):
    TYPE = "com.managed-os.catalog.release-updated.v1"
    TOPIC = TOPIC_RELEASES
    release: ReleaseData
    changed: list[str]


class PolicyPublished(EventPayload):
    """The full compiled policy of one blueprint (device-channel's read model is fed by it),
    with a summary of the blueprint's items for compliance (empty from older producers)."""

    TYPE = "com.managed-os.declarations.policy-published.v1"
    TOPIC = TOPIC_POLICIES
    blueprint_id: str
    revision: int
    token: str
    candidates: list[Candidate]
    items: list[PolicyItem] = Field(default_factory=list)


class DeclarationState(BaseModel):
    category: str
    identifier: str
    server_token: str | None = None
    active: bool | None = None
    valid: str | None = None
    reasons: list[dict[str, Any]] = Field(default_factory=list)


class SoftwareUpdateState(BaseModel):
    install_state: str | None = None
    pending_version: str | None = None
    pending_build: str | None = None
    pending_deadline: str | None = None
    failure_count: int = 0
    failure_reason: str | None = None
    install_reasons: list[str] = Field(default_factory=list)


class DeviceStatusReported(EventPayload):
    TYPE = "com.managed-os.device-channel.device-status-reported.v1"
    TOPIC = TOPIC_DEVICES
    enrollment_id: str
    blueprint_id: str | None
    reported_at: AwareDatetime
    full_report: bool
    facts: DeviceFacts
    softwareupdate: SoftwareUpdateState
    declarations: list[DeclarationState]
    expected: list[ExpectedEnforcement]


class DeviceManifestChanged(EventPayload):
    TYPE = "com.managed-os.device-channel.device-manifest-changed.v1"
    TOPIC = TOPIC_DEVICES
    enrollment_id: str
    blueprint_id: str | None
    declarations_token: str
    changed_at: AwareDatetime
    facts: DeviceFacts
    expected: list[ExpectedEnforcement]


class DeviceRegistered(EventPayload):
    """A Mac was registered or its registry entry changed (blueprint, model, time zone)."""

    TYPE = "com.managed-os.device-channel.device-registered.v1"
    TOPIC = TOPIC_DEVICES
    enrollment_id: str
    blueprint_id: str | None
    serial_number: str | None = None
    model: str | None = None
    time_zone: str | None = None  # IANA name; compliance judges deadlines in it when known
    changed_at: AwareDatetime


class DeviceUnenrolled(EventPayload):
    TYPE = "com.managed-os.device-channel.device-unenrolled.v1"
    TOPIC = TOPIC_DEVICES
    enrollment_id: str
    unenrolled_at: AwareDatetime


ComplianceState = Literal[
    "up_to_date",
    "pending",
    "in_progress",
    "overdue",
    "failed",
    "incompatible",
    "unknown",
    "not_managed",
]


class DeviceComplianceChanged(EventPayload):
    """A Mac's compliance state changed, for one item (`item_id`) or overall (`item_id`
    None; the compliance service publishes these; item changes are in its history API). For
    alerting; keyed by enrollment id."""

    TYPE = "com.managed-os.compliance.device-compliance-changed.v1"
    TOPIC = TOPIC_COMPLIANCE
    enrollment_id: str
    blueprint_id: str | None
    item_id: str | None
    previous: ComplianceState | None
    state: ComplianceState
    reason: str
    target_version: str | None = None
    deadline: str | None = None
    cause: str
    changed_at: AwareDatetime


PAYLOADS: dict[str, type[EventPayload]] = {
    cls.TYPE: cls
    for cls in (
        ReleasePublished,
        ReleaseUpdated,
        PolicyPublished,
        DeviceStatusReported,
        DeviceManifestChanged,
        DeviceRegistered,
        DeviceUnenrolled,
        DeviceComplianceChanged,
    )
}

P = TypeVar("P", bound=EventPayload)


def to_event(payload: EventPayload, *, source: str, subject: str, time: datetime) -> CloudEvent:
    return CloudEvent(
        type=payload.TYPE,
        source=source,
        subject=subject,
        data=payload.model_dump(mode="json"),
        time=time,
    )


def from_event(event: CloudEvent) -> EventPayload | None:
    """The typed payload, or None for a type this version does not know (skip it). A known
    type whose data breaks its contract raises `EnvelopeError`."""
    cls = PAYLOADS.get(event.type)
    if cls is None:
        return None
    try:
        return cls.model_validate(event.data)
    except ValidationError as exc:
        raise EnvelopeError(f"{event.type} event {event.id} has invalid data: {exc}") from exc
