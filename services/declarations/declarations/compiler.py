"""Policy compiler: blueprint configuration + catalog → candidate declarations.

Pure and clock-free (DESIGN.md): the same inputs always give the same candidates, tokens
included, so recompiling unchanged inputs stores nothing and emits nothing.

Implemented here: the status subscriptions (always), `minimum` and `specific` version
enforcement in the item's major, and the upgrade of older majors under
`continuously_enforce` for those modes. `rolling` and BSI `automatic` are refused at the API
until their rules land (issue 4).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import date, datetime, time

from declarations.schemas import LibraryItem, Minimum, Specific
from managed_os import ddm
from managed_os.events import ReleaseData
from managed_os.policy import Applicability, Candidate, ExpectedEnforcement
from managed_os.versions import parse_version

STATUS_SUBSCRIPTIONS_ID = "managed-os.status-subscriptions"
STATUS_ITEMS = (
    "softwareupdate.install-state",
    "softwareupdate.pending-version",
    "softwareupdate.failure-reason",
    "softwareupdate.install-reason",
    "softwareupdate.device-id",
    "softwareupdate.beta-enrollment",
    "device.operating-system.version",
    "device.operating-system.build-version",
    "device.operating-system.supplemental.build-version",
    "device.operating-system.supplemental.extra-version",
    "device.operating-system.marketing-name",
    "device.model.family",
    "device.model.identifier",
    "device.model.marketing-name",
    "management.declarations",
)


def status_subscriptions_candidate() -> Candidate:
    decl = ddm.status_subscriptions(STATUS_SUBSCRIPTIONS_ID, STATUS_ITEMS)
    return Candidate(declaration=decl.to_json(), applies=Applicability(always=True))


def latest_update(releases: Sequence[ReleaseData], major: int) -> ReleaseData | None:
    updates = [r for r in releases if r.major == major and r.kind != "bsi"]
    return max(updates, key=lambda r: (parse_version(r.version), r.build or ""), default=None)


def local_deadline(day: date, at: str) -> datetime:
    hour, minute = (int(x) for x in at.split(":"))
    return datetime.combine(day, time(hour, minute))


def compile_item(item: LibraryItem, releases: Sequence[ReleaseData]) -> list[Candidate]:
    ve = item.version_enforcement
    if not isinstance(ve, Minimum | Specific):
        return []
    if isinstance(ve, Minimum):
        target = latest_update(releases, item.major)
    else:
        target = max(
            (
                r
                for r in releases
                if r.kind != "bsi" and parse_version(r.version) == parse_version(ve.version)
            ),
            key=lambda r: len(r.supported_devices),
            default=None,
        )
    if target is None:
        return []
    deadline = local_deadline(ve.deadline, ve.at)
    build = target.build if isinstance(ve, Specific) else None
    devices = target.supported_devices or None
    candidates = [
        _enforcement(
            item,
            "update",
            f"managed-os.{item.id}.{ve.mode}",
            target,
            build,
            deadline,
            Applicability(majors=[item.major], version_below=ve.version, device_ids=devices),
            f"macOS {target.version} required: below {ve.mode} {ve.version}, "
            f"due {deadline:%Y-%m-%d %H:%M} local",
        )
    ]
    if item.installation_method == "continuously_enforce":
        older = list(range(11, item.major))
        candidates.append(
            _enforcement(
                item,
                "upgrade",
                f"managed-os.{item.id}.upgrade",
                target,
                build,
                deadline,
                Applicability(majors=older, device_ids=devices),
                f"upgrade to macOS {target.version}, due {deadline:%Y-%m-%d %H:%M} local",
            )
        )
    return candidates


def _enforcement(
    item: LibraryItem,
    kind: str,
    identifier: str,
    target: ReleaseData,
    build: str | None,
    deadline: datetime,
    applies: Applicability,
    reason: str,
) -> Candidate:
    decl = ddm.softwareupdate_enforcement(identifier, target.version, deadline, build)
    expected = ExpectedEnforcement(
        item_id=item.id,
        declaration_id=identifier,
        kind=kind,
        target_version=target.version,
        target_build=build,
        deadline=decl.payload["TargetLocalDateTime"],
        reason=reason,
    )
    return Candidate(declaration=decl.to_json(), applies=applies, enforcement=expected)


def compile_blueprint(
    items: Sequence[LibraryItem], releases: Sequence[ReleaseData]
) -> list[Candidate]:
    candidates = [status_subscriptions_candidate()]
    for item in sorted(items, key=lambda i: i.id):
        candidates.extend(compile_item(item, releases))
    return candidates


def policy_token(candidates: Sequence[Candidate]) -> str:
    doc = [c.model_dump(mode="json") for c in candidates]
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
