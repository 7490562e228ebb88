"""Typed values of status items (`declarative/status/*.yaml`) and status reasons
(`declarative/status/statusreason.yaml`, `StatusReport.Errors[].Reasons`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from managed_os.ddm.categories import Category
from managed_os.ddm.codec import expect, optional
from managed_os.versions import Build, OSVersion

# The rangelist of softwareupdate.install-state, plus `waiting`, which Apple's prose and older
# schema descriptions use. Values outside it are still returned, as plain strings.
INSTALL_STATES = frozenset({"none", "waiting", "downloading", "prepared", "installing", "failed"})


@dataclass(frozen=True)
class StatusReason:
    """`StatusReason`: `Code`/`code`, optional description and details (keys kept as sent)."""

    code: str
    description: str | None = None
    details: dict[str, Any] | None = None


@dataclass(frozen=True)
class StatusError:
    """An entry of `Errors`: a status item the device could not return, and why."""

    status_item: str
    reasons: tuple[StatusReason, ...] = ()


@dataclass(frozen=True)
class PendingVersion:
    """`softwareupdate.pending-version`; the empty strings Apple sends when nothing is pending
    become `None`. `target_local_datetime` is kept as text: its format is not specified."""

    os_version: OSVersion | None
    build_version: Build | None
    target_local_datetime: str | None = None

    @property
    def is_pending(self) -> bool:
        return self.os_version is not None or self.build_version is not None


@dataclass(frozen=True)
class FailureReason:
    """`softwareupdate.failure-reason`: failures of the current update (`0` if none)."""

    count: int
    reason: str | None = None
    timestamp: str | None = None


@dataclass(frozen=True)
class InstallReason:
    """`softwareupdate.install-reason`; `declaration_id` only when `declaration` is a reason."""

    reasons: tuple[str, ...]
    declaration_id: str | None = None


@dataclass(frozen=True)
class DeclarationStatus:
    """One entry of `management.declarations`; `valid` is `valid`, `invalid` or `unknown`."""

    category: Category
    identifier: str
    server_token: str
    active: bool
    valid: str
    reasons: tuple[StatusReason, ...] = ()


def parse_reason(data: Any, where: str, pascal: bool) -> StatusReason:
    """A `StatusReason` object; raises `DDMProtocolError` naming `where`."""
    data = expect(data, dict, where)
    # Protocol keys are PascalCase (StatusReport.Errors); status-item contents are lowercase.
    keys = ("Code", "Description", "Details") if pascal else ("code", "description", "details")
    code, description, details = keys
    return StatusReason(
        code=expect(data.get(code), str, f"{where}.{code}"),
        description=optional(data, description, str, where),
        details=optional(data, details, dict, where),
    )


def parse_reasons(value: Any, where: str, pascal: bool) -> tuple[StatusReason, ...]:
    if value is None:
        return ()
    entries = expect(value, list, where)
    return tuple(parse_reason(entry, f"{where}[{i}]", pascal) for i, entry in enumerate(entries))
