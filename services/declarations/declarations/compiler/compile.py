"""Rules → candidates (declaration + applicability + what compliance should expect)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from datetime import datetime

from declarations.compiler import rules
from declarations.compiler.rules import Rule
from declarations.compiler.support import Board, MajorView
from declarations.schemas import BsiAutomatic, LibraryItem, Minimum, Rolling, Specific
from managed_os import ddm
from managed_os.events import ReleaseData
from managed_os.policy import Applicability, Candidate, ExpectedEnforcement

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
_KIND_CODE = {"update": "u", "upgrade": "g", "bsi": "b", "self_service": "s"}


def status_subscriptions_candidate() -> Candidate:
    decl = ddm.status_subscriptions(STATUS_SUBSCRIPTIONS_ID, STATUS_ITEMS)
    return Candidate(declaration=decl.to_json(), applies=Applicability(always=True))


def _identifier(item: LibraryItem, rule: Rule, boards: list[Board]) -> str:
    """Stable per slot (kind, version window, builds, Macs), not per target or deadline: when
    Apple ships again the same declaration changes (new ServerToken) instead of being
    replaced by another. At most 64 octets (declarationbase.yaml)."""
    slot = [
        rule.kind,
        rule.majors,
        rule.below,
        rule.at_least,
        rule.builds,
        rule.enrollment_ids,
        sorted(b or "" for b in boards),
    ]
    digest = hashlib.sha256(json.dumps(slot).encode()).hexdigest()[:12]
    return f"managed-os.{item.id}.{_KIND_CODE[rule.kind]}.{digest}"


def _candidate(item: LibraryItem, rule: Rule, boards: list[Board]) -> Candidate:
    identifier = _identifier(item, rule, boards)
    build = rule.target_build
    decl = ddm.softwareupdate_enforcement(identifier, rule.target_version, rule.deadline, build)
    known = sorted(b for b in boards if b is not None)
    return Candidate(
        declaration=decl.to_json(),
        applies=Applicability(
            majors=list(rule.majors),
            version_below=rule.below,
            version_at_least=rule.at_least,
            builds=list(rule.builds) if rule.builds else None,
            extra_below=rule.extra_below,
            device_ids=known,
            unknown_device=None in boards,
            enrollment_ids=list(rule.enrollment_ids) if rule.enrollment_ids else None,
        ),
        enforcement=ExpectedEnforcement(
            item_id=item.id,
            declaration_id=identifier,
            kind=rule.kind,
            target_version=rule.target_version,
            target_build=build,
            deadline=decl.payload["TargetLocalDateTime"],
            reason=rule.reason,
        ),
    )


def item_rules(
    item: LibraryItem,
    view: MajorView,
    self_service_requests: Iterable[tuple[str, datetime]] = (),
) -> list[tuple[Rule, list[Board]]]:
    ve, found = item.version_enforcement, []
    if isinstance(ve, Rolling):
        found += rules.grouped(rules.rolling(item, view, ve))
    elif isinstance(ve, Minimum):
        found += rules.grouped(rules.minimum(item, view, ve))
    elif isinstance(ve, Specific):
        found += rules.grouped(rules.specific(item, view, ve))
    found += rules.grouped(rules.upgrade(item, view))
    if item.installation_method == "self_service":
        found += rules.grouped(rules.self_service(item, view, self_service_requests))
    if isinstance(item.bsi_enforcement, BsiAutomatic):
        bsi = item.bsi_enforcement
        found += rules.grouped(rules.bsi(item, view, bsi.within, bsi.at))
    return found


def compile_item(
    item: LibraryItem,
    releases: Sequence[ReleaseData],
    self_service_requests: Iterable[tuple[str, datetime]] = (),
) -> list[Candidate]:
    view = MajorView(item.major, releases)
    return [
        _candidate(item, rule, boards)
        for rule, boards in item_rules(item, view, self_service_requests)
    ]


def compile_blueprint(
    items: Sequence[LibraryItem],
    releases: Sequence[ReleaseData],
    self_service_requests: dict[str, list[tuple[str, datetime]]] | None = None,
) -> list[Candidate]:
    requests = self_service_requests or {}
    candidates = [status_subscriptions_candidate()]
    for item in sorted(items, key=lambda i: i.id):
        candidates.extend(compile_item(item, releases, requests.get(item.id, ())))
    return candidates


def policy_token(candidates: Sequence[Candidate]) -> str:
    doc = [c.model_dump(mode="json") for c in candidates]
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
