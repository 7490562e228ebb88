"""Rules → candidates (declaration + applicability + what compliance should expect)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from declarations.compiler import rules
from declarations.compiler.rules import Rule
from declarations.compiler.support import Board, MajorView
from declarations.schemas import BsiAutomatic, LibraryItem, Minimum, Rolling, Specific
from managed_os import ddm
from managed_os.events import ReleaseData
from managed_os.policy import Applicability, Candidate

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


@dataclass(frozen=True)
class Slot:
    """What every item with the same rule shares: the payload (validated once, through the
    DDM builder), the applicability and the identifier suffix. Only the identifier's item
    part — and so the ServerToken — differs from one item to the next."""

    code: str
    digest: str
    payload: dict[str, str]
    applies: dict[str, Any]
    rule: Rule


def _slot(rule: Rule, boards: list[Board]) -> Slot:
    """The identifier is stable per slot (kind, version window, builds, Macs), not per target
    or deadline: when Apple ships again, the same declaration changes (new ServerToken)
    instead of being replaced by another."""
    key = [
        rule.kind,
        rule.majors,
        rule.below,
        rule.at_least,
        rule.builds,
        rule.enrollment_ids,
        sorted(b or "" for b in boards),
    ]
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:12]
    probe = ddm.softwareupdate_enforcement(
        "probe", rule.target_version, rule.deadline, rule.target_build
    )
    applies = Applicability(
        majors=list(rule.majors),
        version_below=rule.below,
        version_at_least=rule.at_least,
        builds=list(rule.builds) if rule.builds else None,
        extra_below=rule.extra_below,
        device_ids=sorted(b for b in boards if b is not None),
        unknown_device=None in boards,
        enrollment_ids=list(rule.enrollment_ids) if rule.enrollment_ids else None,
    )
    return Slot(
        _KIND_CODE[rule.kind], digest, dict(probe.payload), applies.model_dump(mode="json"), rule
    )


def _candidate_doc(item_id: str, slot: Slot) -> dict[str, Any]:
    """One candidate as the JSON document stored and published (Candidate's shape)."""
    identifier = f"managed-os.{item_id}.{slot.code}.{slot.digest}"  # ≤ 64 octets
    payload = dict(slot.payload)
    token = ddm.server_token(ddm.ENFORCEMENT_SPECIFIC, identifier, payload)
    rule = slot.rule
    return {
        "declaration": {
            "Type": ddm.ENFORCEMENT_SPECIFIC,
            "Identifier": identifier,
            "ServerToken": token,
            "Payload": payload,
        },
        "applies": slot.applies,
        "enforcement": {
            "item_id": item_id,
            "declaration_id": identifier,
            "kind": rule.kind,
            "target_version": rule.target_version,
            "target_build": rule.target_build,
            "deadline": payload["TargetLocalDateTime"],
            "reason": rule.reason,
        },
    }


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


class Compiler:
    """Compiles many items against one catalog view. Items whose rules are the same (the same
    major, modes, windows and switch-on date) share the rule work; only their declarations'
    identifiers differ. One per recompile: it holds no clock and no I/O."""

    def __init__(self, releases: Sequence[ReleaseData]) -> None:
        self.releases = releases
        self._views: dict[int, MajorView] = {}
        self._slots: dict[str, list[Slot]] = {}

    def view(self, major: int) -> MajorView:
        if major not in self._views:
            self._views[major] = MajorView(major, self.releases)
        return self._views[major]

    def item(
        self, item: LibraryItem, requests: Sequence[tuple[str, datetime]] = ()
    ) -> list[Candidate]:
        return [Candidate.model_validate(d) for d in self.item_docs(item, requests)]

    def item_docs(
        self, item: LibraryItem, requests: Sequence[tuple[str, datetime]] = ()
    ) -> list[dict[str, Any]]:
        """The item's candidates as JSON documents (what revisions and events carry)."""
        key = json.dumps(
            [
                item.major,
                item.installation_method,
                item.upgrade_enforced_since,
                item.created_at,
                item.version_enforcement.model_dump(mode="json"),
                item.bsi_enforcement.model_dump(mode="json"),
                list(requests),
            ],
            default=str,
        )
        if key not in self._slots:
            self._slots[key] = [
                _slot(rule, boards)
                for rule, boards in item_rules(item, self.view(item.major), requests)
            ]
        return [_candidate_doc(item.id, slot) for slot in self._slots[key]]


def compile_blueprint(
    items: Sequence[LibraryItem],
    releases: Sequence[ReleaseData],
    self_service_requests: dict[str, list[tuple[str, datetime]]] | None = None,
) -> list[Candidate]:
    requests = self_service_requests or {}
    compiler = Compiler(releases)
    candidates = [status_subscriptions_candidate()]
    for item in sorted(items, key=lambda i: i.id):
        candidates.extend(compiler.item(item, requests.get(item.id, [])))
    return candidates


def policy_token(candidates: Sequence[Candidate]) -> str:
    return token_of([c.model_dump(mode="json") for c in candidates])


def token_of(docs: Sequence[dict[str, object]]) -> str:
    """The policy token over candidates already dumped to JSON-ready dicts."""
    canonical = json.dumps(docs, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
