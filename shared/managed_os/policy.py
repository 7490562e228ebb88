"""Compiled policy: candidate declarations, each with an applicability rule over device facts.

The declarations service produces a policy per blueprint (no clock involved); the
device-channel picks the candidates that apply to one device. Keeping the rule evaluation
here means producer and consumer can never disagree about what a rule means.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from managed_os.versions import OSVersion, VersionError, parse_version


class DeviceFacts(BaseModel):
    """What the suite knows about a Mac, mostly from its DDM status reports."""

    model_config = ConfigDict(frozen=True)

    enrollment_id: str
    os_version: str | None = None
    build_version: str | None = None
    supplemental_build_version: str | None = None
    supplemental_extra_version: str | None = None
    device_id: str | None = None  # softwareupdate.device-id: a board id such as J313AP
    model_identifier: str | None = None

    @property
    def version(self) -> OSVersion | None:
        if not self.os_version:
            return None
        try:
            return parse_version(self.os_version)
        except VersionError:
            return None

    @property
    def effective_build(self) -> str | None:
        """The build including any BSI (supplemental) suffix."""
        return self.supplemental_build_version or self.build_version


class Applicability(BaseModel):
    """A conjunction of conditions; an unset condition always holds.

    - `always`: applies even before the device has reported its OS version.
    - `majors`: the device's major is one of these.
    - `version_below` / `version_at_least`: bounds on the device's OS version (base version,
      a BSI counts as its base version).
    - `builds`: the device's base build is one of these (BSI prerequisite matching).
    - `extra_below`: the device's installed BSI letter, if any, sorts below this one (so a
      device that already has `(a)` is not sent `(a)` again).
    - `device_ids`: the device's board id is one of these. A device whose board id is not
      known yet matches only when `unknown_device` is set (DESIGN.md: "Unknown d → assume
      supported"); the compiler sets it on exactly one candidate per rule, so such a device
      still gets one enforcement, not several.
    - `enrollment_ids`: only these devices (self-service requests).
    Every rule but `always` needs a known OS version.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    always: bool = False
    majors: list[int] | None = None
    version_below: str | None = None
    version_at_least: str | None = None
    builds: list[str] | None = None
    extra_below: str | None = None
    device_ids: list[str] | None = None
    unknown_device: bool = True
    enrollment_ids: list[str] | None = None

    def matches(self, facts: DeviceFacts) -> bool:
        if self.always:
            return True
        version = facts.version
        if version is None:
            return False
        base = version.base
        if self.majors is not None and base.major not in self.majors:
            return False
        if self.version_below is not None and not base < parse_version(self.version_below):
            return False
        if self.version_at_least is not None and base < parse_version(self.version_at_least):
            return False
        if self.builds is not None and facts.build_version not in self.builds:
            return False
        if self.extra_below is not None and (facts.supplemental_extra_version or "") >= (
            self.extra_below
        ):
            return False
        if self.device_ids is not None:
            if facts.device_id is None:
                if not self.unknown_device:
                    return False
            elif facts.device_id not in self.device_ids:
                return False
        return self.enrollment_ids is None or facts.enrollment_id in self.enrollment_ids


class ExpectedEnforcement(BaseModel):
    """What an enforcement declaration asks of a device; compliance judges against it."""

    model_config = ConfigDict(frozen=True)

    item_id: str
    declaration_id: str
    kind: Literal["update", "upgrade", "bsi", "self_service"]
    target_version: str
    target_build: str | None = None
    # device-local YYYY-MM-DDTHH:MM:SS, as sent in TargetLocalDateTime
    deadline: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
    reason: str = ""


class Candidate(BaseModel):
    """One declaration (Apple's envelope, ServerToken included) and when it applies."""

    model_config = ConfigDict(frozen=True)

    declaration: dict[str, Any]
    applies: Applicability
    enforcement: ExpectedEnforcement | None = None

    @property
    def identifier(self) -> str:
        return str(self.declaration["Identifier"])


class PolicyItem(BaseModel):
    """What compliance needs to know of one library item of a blueprint, beyond the
    enforcements a device is sent: its major, whether it manages updates at all, and which
    Macs can run that major (`boards` None: no device list known, so every Mac is assumed to)."""

    model_config = ConfigDict(frozen=True)

    item_id: str
    label: str = ""
    major: int
    mode: Literal["rolling", "minimum", "specific", "do_not_manage"]
    installation_method: Literal["continuously_enforce", "self_service"]
    boards: list[str] | None = None

    def runs_on(self, device_id: str | None) -> bool:
        """Can a Mac with this board id run the item's major? Unknown either way: yes."""
        return device_id is None or self.boards is None or device_id in self.boards


class Policy(BaseModel):
    model_config = ConfigDict(frozen=True)

    blueprint_id: str
    revision: int
    token: str
    candidates: list[Candidate] = Field(default_factory=list)

    def select(self, facts: DeviceFacts) -> list[Candidate]:
        return [c for c in self.candidates if c.applies.matches(facts)]
