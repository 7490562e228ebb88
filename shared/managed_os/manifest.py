"""A device's manifest: the policy candidates that apply to its facts, plus one activation.

Pure. The DeclarationsToken is computed over the sorted manifest, so it is stable across
requests and changes only when the set of (category, identifier, ServerToken) changes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property

from managed_os import ddm
from managed_os.policy import DeviceFacts, ExpectedEnforcement, Policy

ACTIVATION_ID = "managed-os.activation"


@dataclass(frozen=True)
class Manifest:
    declarations: tuple[ddm.Declaration, ...]
    expected: tuple[ExpectedEnforcement, ...]
    token: str

    def find(self, category: str, identifier: str) -> ddm.Declaration | None:
        for decl in self.declarations:
            if decl.category == category and decl.identifier == identifier:
                return decl
        return None

    def items_response(self) -> dict[str, object]:
        return ddm.DeclarationItemsResponse.for_items(
            d.manifest_item for d in self.declarations
        ).to_json()

    @cached_property
    def items_body(self) -> bytes:
        """The `DeclarationItemsResponse` body, encoded once per manifest."""
        return compact_json(self.items_response())

    def declaration_body(self, category: str, identifier: str) -> bytes | None:
        """One declaration's body, encoded once per manifest; None if not in it."""
        body = self._bodies.get((category, identifier))
        if body is None:
            decl = self.find(category, identifier)
            if decl is None:
                return None
            body = self._bodies[(category, identifier)] = compact_json(decl.to_json())
        return body

    @cached_property
    def _bodies(self) -> dict[tuple[str, str], bytes]:
        return {}


_EMPTY = Manifest((), (), ddm.declarations_token([]))


class ManifestMemo:
    """Manifests by (policy object, the facts its rules read), bounded; one per service.

    Thousands of Macs share a handful of (blueprint, version, build, board) combinations, so a
    sync usually costs two dictionary lookups instead of re-validating and re-hashing every
    declaration. Keyed by the policy object (the device channel parses each revision once and
    keeps it), never by a caller's token; an entry holds its policy, so the id is not reused.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._policies: dict[int, _PolicyManifests] = {}
        self._count = 0

    def get(
        self, policy: Policy | None, facts: DeviceFacts, *, user_channel: bool = False
    ) -> Manifest:
        """`build_manifest`, memoised."""
        if policy is None or user_channel:
            return _EMPTY
        memo = self._policies.get(id(policy))
        if memo is None or memo.policy is not policy:
            memo = self._policies[id(policy)] = _PolicyManifests(policy)
        key = (
            facts.os_version,
            facts.build_version,
            facts.supplemental_extra_version,
            facts.device_id,
            facts.enrollment_id if memo.per_device else None,
        )
        manifest = memo.manifests.get(key)
        if manifest is None:
            if self._count >= self.size:  # full: start over (cheap, and rare)
                self._policies, self._count = {id(policy): memo}, 0
                memo.manifests.clear()
            manifest = memo.manifests[key] = _build(policy, facts)
            self._count += 1
        return manifest


class _PolicyManifests:
    __slots__ = ("manifests", "per_device", "policy")

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        # Self-service candidates name devices: then each device is its own key.
        self.per_device = any(c.applies.enrollment_ids for c in policy.candidates)
        self.manifests: dict[tuple[str | None, ...], Manifest] = {}


def build_manifest(
    policy: Policy | None, facts: DeviceFacts, *, user_channel: bool = False
) -> Manifest:
    """Software-update declarations are system-scope: the user channel gets an empty manifest."""
    if policy is None or user_channel:
        return _EMPTY
    return _build(policy, facts)


def compact_json(value: object) -> bytes:
    """The bytes of a DDM response body: compact JSON, ASCII-escaped."""
    return json.dumps(value, separators=(",", ":")).encode()


def _build(policy: Policy, facts: DeviceFacts) -> Manifest:
    chosen = policy.select(facts)
    configs = [ddm.Declaration.model_validate(c.declaration) for c in chosen]
    declarations = list(configs)
    if configs:
        declarations.append(ddm.activation_simple(ACTIVATION_ID, [c.identifier for c in configs]))
    expected = tuple(c.enforcement for c in chosen if c.enforcement is not None)
    token = ddm.declarations_token(d.manifest_item for d in declarations)
    return Manifest(tuple(declarations), expected, token)
