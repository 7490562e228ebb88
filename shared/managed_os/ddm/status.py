"""Status reports (`declarative/protocol/statusreport.yaml`) and typed status items
(`declarative/status/*.yaml`).

`StatusItems` nests dotted item names: `softwareupdate.install-state` arrives as
`{"softwareupdate": {"install-state": "none"}}`. The nested dict is kept as sent; `StatusView`
reads typed values out of it (the same accessors work on a stored, merged status). Accessors
return `None` when an item is absent and raise `DDMProtocolError` when it has the wrong shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from managed_os.ddm.categories import Category
from managed_os.ddm.codec import expect, load_json_object, optional, type_name
from managed_os.ddm.errors import DDMProtocolError
from managed_os.ddm.status_values import (
    DeclarationStatus,
    FailureReason,
    InstallReason,
    PendingVersion,
    StatusError,
    parse_reasons,
)
from managed_os.versions import Build, OSVersion, VersionError, normalize_extra


@dataclass(frozen=True)
class StatusView:
    """Typed read access to a nested `StatusItems` dict."""

    items: Mapping[str, Any]

    def get(self, name: str) -> Any:
        """The raw value of dotted item `name`, or `None` when it is absent."""
        node: Any = self.items
        walked: list[str] = []
        for part in name.split("."):
            if type(node) is not dict and not isinstance(node, Mapping):  # dict: no ABC check
                where = ".".join(walked)
                raise DDMProtocolError(
                    f"status item {where} must be an object, not {type_name(node)}"
                )
            if part not in node:
                return None
            node = node[part]
            walked.append(part)
        return node

    def _text(self, name: str) -> str | None:
        value = self.get(name)
        return None if value is None else expect(value, str, f"status item {name}")

    def _object(self, name: str) -> dict[str, Any] | None:
        value = self.get(name)
        return None if value is None else expect(value, dict, f"status item {name}")

    def _version(self, name: str, text: str | None) -> OSVersion | None:
        try:
            return OSVersion.parse(text) if text else None
        except VersionError as exc:
            raise DDMProtocolError(f"status item {name}: {exc}") from exc

    def _build(self, name: str, text: str | None) -> Build | None:
        try:
            return Build.parse(text) if text else None
        except VersionError as exc:
            raise DDMProtocolError(f"status item {name}: {exc}") from exc

    @property
    def os_version(self) -> OSVersion | None:
        """`device.operating-system.version`, without any BSI letter."""
        name = "device.operating-system.version"
        return self._version(name, self._text(name))

    @property
    def installed_version(self) -> OSVersion | None:
        """`os_version` with the BSI letter of `supplemental.extra-version`: `26.3.1 (a)`."""
        version = self.os_version
        return version.with_extra(self.supplemental_extra_version) if version else None

    @property
    def build_version(self) -> Build | None:
        name = "device.operating-system.build-version"
        return self._build(name, self._text(name))

    @property
    def supplemental_build_version(self) -> Build | None:
        """`device.operating-system.supplemental.build-version`, e.g. `24A346a`."""
        name = "device.operating-system.supplemental.build-version"
        return self._build(name, self._text(name))

    @property
    def supplemental_extra_version(self) -> str | None:
        """`device.operating-system.supplemental.extra-version`: the BSI letter (`a`), or None."""
        name = "device.operating-system.supplemental.extra-version"
        try:
            return normalize_extra(self._text(name))
        except VersionError as exc:
            raise DDMProtocolError(f"status item {name}: {exc}") from exc

    @property
    def model_identifier(self) -> str | None:
        return self._text("device.model.identifier")

    @property
    def model_family(self) -> str | None:
        return self._text("device.model.family")

    @property
    def marketing_name(self) -> str | None:
        """`device.model.marketing-name` (Apple: "may not always be available")."""
        return self._text("device.model.marketing-name")

    @property
    def os_marketing_name(self) -> str | None:
        return self._text("device.operating-system.marketing-name")

    @property
    def softwareupdate_device_id(self) -> str | None:
        """`softwareupdate.device-id`: the id to match against gdmf `SupportedDevices`."""
        return self._text("softwareupdate.device-id")

    @property
    def install_state(self) -> str | None:
        """`softwareupdate.install-state`; unknown values (see `INSTALL_STATES`) pass through."""
        return self._text("softwareupdate.install-state")

    @property
    def beta_enrollment(self) -> str | None:
        """`softwareupdate.beta-enrollment`: `""` = not enrolled, `None` = not reported."""
        return self._text("softwareupdate.beta-enrollment")

    @property
    def pending_version(self) -> PendingVersion | None:
        name = "softwareupdate.pending-version"
        data = self._object(name)
        if data is None:
            return None
        where = f"status item {name}"
        return PendingVersion(
            os_version=self._version(name, optional(data, "os-version", str, where)),
            build_version=self._build(name, optional(data, "build-version", str, where)),
            target_local_datetime=optional(data, "target-local-date-time", str, where) or None,
        )

    @property
    def failure_reason(self) -> FailureReason | None:
        name = "softwareupdate.failure-reason"
        data = self._object(name)
        if data is None:
            return None
        where = f"status item {name}"
        return FailureReason(
            count=expect(data.get("count"), int, f"{where}.count"),
            reason=optional(data, "reason", str, where),
            timestamp=optional(data, "timestamp", str, where),
        )

    @property
    def install_reason(self) -> InstallReason | None:
        name = "softwareupdate.install-reason"
        data = self._object(name)
        if data is None:
            return None
        where = f"status item {name}"
        reasons = expect(data.get("reason"), list, f"{where}.reason")
        return InstallReason(
            reasons=tuple(expect(r, str, f"{where}.reason[{i}]") for i, r in enumerate(reasons)),
            declaration_id=optional(data, "declaration-id", str, where),
        )

    @property
    def declarations(self) -> tuple[DeclarationStatus, ...] | None:
        """`management.declarations`, flattened across the four category arrays."""
        data = self._object("management.declarations")
        if data is None:
            return None
        result: list[DeclarationStatus] = []
        for category in Category:
            where = f"status item management.declarations.{category.status_key}"
            for i, entry in enumerate(expect(data.get(category.status_key, []), list, where)):
                at = f"{where}[{i}]"
                entry = expect(entry, dict, at)
                result.append(
                    DeclarationStatus(
                        category=category,
                        identifier=expect(entry.get("identifier"), str, f"{at}.identifier"),
                        server_token=expect(entry.get("server-token"), str, f"{at}.server-token"),
                        active=expect(entry.get("active"), bool, f"{at}.active"),
                        valid=expect(entry.get("valid"), str, f"{at}.valid"),
                        reasons=parse_reasons(entry.get("reasons"), f"{at}.reasons", pascal=False),
                    )
                )
        return tuple(result)


@dataclass(frozen=True)
class StatusReport(StatusView):
    """A parsed `StatusReport`: `StatusItems` (nested, raw), `Errors`, `FullReport`."""

    errors: tuple[StatusError, ...] = ()
    full_report: bool = False
    raw: bytes | None = field(default=None, repr=False, compare=False)


def parse_status_report(raw: bytes | str | Mapping[str, Any]) -> StatusReport:
    """Parse and shape-check a `StatusReport`; raises `DDMProtocolError`.

    `StatusItems` must be an object. `Errors` (required by Apple) defaults to `[]`;
    `FullReport` defaults to `false`. Item values are checked only when read.
    """
    data = load_json_object(raw, "status report")
    if "StatusItems" not in data:
        raise DDMProtocolError("status report has no StatusItems")
    items = expect(data["StatusItems"], dict, "StatusItems")
    errors: list[StatusError] = []
    for i, entry in enumerate(expect(data.get("Errors", []), list, "Errors")):
        where = f"Errors[{i}]"
        entry = expect(entry, dict, where)
        errors.append(
            StatusError(
                status_item=expect(entry.get("StatusItem"), str, f"{where}.StatusItem"),
                reasons=parse_reasons(entry.get("Reasons"), f"{where}.Reasons", pascal=True),
            )
        )
    full = expect(data.get("FullReport", False), bool, "FullReport")
    return StatusReport(
        items=items,
        errors=tuple(errors),
        full_report=full,
        raw=raw if isinstance(raw, bytes) else None,
    )
