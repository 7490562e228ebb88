"""API shapes of blueprints and Managed OS library items (validation lives here)."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from managed_os.versions import VersionError, parse_version

WITHIN = Literal["1d", "2d", "1w", "2w", "3w", "1mo", "2mo", "3mo"]
_HHMM = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_at(value: str) -> str:
    if not _HHMM.fullmatch(value):
        raise ValueError(f"'at' must be a local time HH:MM (00:00–23:59), got {value!r}")
    return value


class DoNotManage(Strict):
    mode: Literal["do_not_manage"]


class Rolling(Strict):
    mode: Literal["rolling"]
    within: WITHIN
    at: str

    _at = field_validator("at")(_check_at)


class Pinned(Strict):
    version: str
    deadline: date
    at: str

    _at = field_validator("at")(_check_at)

    @field_validator("deadline", mode="before")
    @classmethod
    def _iso_date(cls, value: object) -> object:
        if isinstance(value, date) and not isinstance(value, datetime):
            text = value.isoformat()  # already a date (built in code, or read back)
        elif isinstance(value, str) and _DATE.fullmatch(value):
            text = value
        else:
            raise ValueError(f"deadline must be a date written YYYY-MM-DD, got {value!r}")
        if not 2000 <= int(text[:4]) <= 2100:
            raise ValueError(f"deadline {text} is not a plausible date")
        return value

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        try:
            v = parse_version(value)
        except VersionError as exc:
            raise ValueError(str(exc)) from exc
        if v.is_bsi:
            raise ValueError("version must be an OS update, not a BSI such as '26.3.1 (a)'")
        return str(v)


class Minimum(Pinned):
    mode: Literal["minimum"]


class Specific(Pinned):
    mode: Literal["specific"]


VersionEnforcement = Annotated[
    DoNotManage | Rolling | Minimum | Specific, Field(discriminator="mode")
]


class BsiNone(Strict):
    mode: Literal["none"]


class BsiAutomatic(Strict):
    mode: Literal["automatic"]
    within: WITHIN
    at: str

    _at = field_validator("at")(_check_at)


BsiEnforcement = Annotated[BsiNone | BsiAutomatic, Field(discriminator="mode")]


class BlueprintIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=2000)


class Blueprint(BlueprintIn):
    id: str
    created_at: datetime
    updated_at: datetime


class LibraryItemIn(Strict):
    major: int = Field(ge=11, le=99)
    label: str = Field("", max_length=200)
    blueprint_ids: list[str] = Field(default_factory=list, max_length=1000)
    installation_method: Literal["continuously_enforce", "self_service"]
    version_enforcement: VersionEnforcement
    bsi_enforcement: BsiEnforcement = Field(default_factory=lambda: BsiNone(mode="none"))

    @model_validator(mode="after")
    def _consistent(self) -> LibraryItemIn:
        ve = self.version_enforcement
        if isinstance(ve, DoNotManage) and self.installation_method == "continuously_enforce":
            raise ValueError(
                "version_enforcement 'do_not_manage' cannot be combined with installation_method "
                "'continuously_enforce': choose 'self_service' or an enforcement mode"
            )
        if isinstance(ve, Minimum | Specific) and parse_version(ve.version).major != self.major:
            raise ValueError(
                f"version {ve.version} is not a macOS {self.major} release "
                f"(item major is {self.major})"
            )
        return self


class LibraryItem(LibraryItemIn):
    id: str
    upgrade_enforced_since: datetime | None
    created_at: datetime
    updated_at: datetime


class PolicyRevision(BaseModel):
    blueprint_id: str
    revision: int
    token: str
    created_at: datetime
    candidates: list[dict[str, object]]
    items: list[dict[str, object]] = Field(default_factory=list)


class BlueprintPatch(Strict):
    name: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=2000)


class SelfServiceRequestIn(Strict):
    enrollment_id: str = Field(min_length=1, max_length=200)
    hours: int = Field(24, ge=1, le=24 * 14, description="Deadline from now, in hours")


class SelfServiceRequest(BaseModel):
    id: str
    item_id: str
    enrollment_id: str
    requested_at: datetime
    deadline: str
    requested_by: str


class PreviewIn(Strict):
    os_version: str = Field(max_length=32)
    build_version: str | None = Field(None, max_length=32)
    supplemental_build_version: str | None = Field(None, max_length=32)
    supplemental_extra_version: str | None = Field(None, max_length=8)
    device_id: str | None = Field(None, max_length=64)
    enrollment_id: str = Field("preview", min_length=1, max_length=200)

    @field_validator("os_version")
    @classmethod
    def _version(cls, value: str) -> str:
        try:
            parse_version(value)
        except VersionError as exc:
            raise ValueError(str(exc)) from exc
        return value


class PreviewDeclaration(BaseModel):
    declaration: dict[str, object]
    reason: str


class PreviewOut(BaseModel):
    blueprint_id: str
    revision: int | None
    declarations_token: str
    declarations: list[PreviewDeclaration]
