"""Builders for the declarations the suite sends. Each returns a `Declaration` with its token.

Lists inside payloads are sorted and de-duplicated so that the same set of inputs always gives
the same `ServerToken`, whatever order the caller produced them in.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from managed_os.ddm.declarations import Declaration
from managed_os.ddm.errors import InvalidDeclaration
from managed_os.versions import Build, OSVersion, VersionError, parse_build, parse_version

ENFORCEMENT_SPECIFIC = "com.apple.configuration.softwareupdate.enforcement.specific"
STATUS_SUBSCRIPTIONS = "com.apple.configuration.management.status-subscriptions"
ACTIVATION_SIMPLE = "com.apple.activation.simple"


def format_local_datetime(value: datetime) -> str:
    """`YYYY-MM-DDTHH:MM:SS` device-local time; a time-zone-aware value is refused because the
    device would read it as its own local time anyway."""
    if value.tzinfo is not None:
        raise InvalidDeclaration(
            f"TargetLocalDateTime must be a naive (device-local) datetime, got {value.isoformat()}"
        )
    return value.isoformat(timespec="seconds")


def softwareupdate_enforcement(
    identifier: str,
    target_os_version: str | OSVersion,
    target_local_datetime: datetime,
    target_build_version: str | Build | None = None,
    details_url: str | None = None,
) -> Declaration:
    """`com.apple.configuration.softwareupdate.enforcement.specific` (schema of the same name).

    `TargetOSVersion` never carries a BSI letter: `26.3.1 (a)` is refused with
    `InvalidDeclaration`; pin a BSI with its supplemental `target_build_version` instead.
    Seconds are kept, sub-seconds dropped, from `target_local_datetime`.
    """
    try:
        version = (
            target_os_version
            if isinstance(target_os_version, OSVersion)
            else parse_version(target_os_version)
        )
        build = (
            None
            if target_build_version is None
            else target_build_version
            if isinstance(target_build_version, Build)
            else parse_build(target_build_version)
        )
    except VersionError as exc:
        raise InvalidDeclaration(str(exc)) from exc
    if version.is_bsi:
        raise InvalidDeclaration(
            f"TargetOSVersion {str(version)!r} carries a BSI letter; devices reject it. Use "
            f"{version.without_extra_str!r} with the BSI's build as TargetBuildVersion"
        )
    payload: dict[str, str] = {
        "TargetOSVersion": version.without_extra_str,
        "TargetLocalDateTime": format_local_datetime(target_local_datetime),
    }
    if build is not None:
        payload["TargetBuildVersion"] = str(build)
    if details_url is not None:
        if not details_url.startswith(("https://", "http://")):
            raise InvalidDeclaration(f"DetailsURL must be an http(s) URL, got {details_url!r}")
        payload["DetailsURL"] = details_url
    return Declaration.build(ENFORCEMENT_SPECIFIC, identifier, payload)


def status_subscriptions(identifier: str, names: Iterable[str]) -> Declaration:
    """`com.apple.configuration.management.status-subscriptions`: `StatusItems` is a list of
    `{"Name": <status item>}`; names such as `softwareupdate.install-state`."""
    unique = sorted(set(names))
    bad = [name for name in unique if not name or name != name.strip() or " " in name]
    if bad:
        raise InvalidDeclaration(f"invalid status item names: {bad!r}")
    payload = {"StatusItems": [{"Name": name} for name in unique]}
    return Declaration.build(STATUS_SUBSCRIPTIONS, identifier, payload)


def activation_simple(
    identifier: str, configuration_ids: Iterable[str], predicate: str | None = None
) -> Declaration:
    """`com.apple.activation.simple`: activates `StandardConfigurations` (identifiers), only
    when the optional NSPredicate `Predicate` holds."""
    ids = sorted(set(configuration_ids))
    if any(not config_id for config_id in ids):
        raise InvalidDeclaration("StandardConfigurations must not contain an empty identifier")
    payload: dict[str, object] = {"StandardConfigurations": ids}
    if predicate is not None:
        payload["Predicate"] = predicate
    return Declaration.build(ACTIVATION_SIMPLE, identifier, payload)
