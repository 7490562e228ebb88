"""A device's manifest: the policy candidates that apply to its facts, plus one activation.

Pure. The DeclarationsToken is computed over the sorted manifest, so it is stable across
requests and changes only when the set of (category, identifier, ServerToken) changes.
"""

from __future__ import annotations

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
        return self._items_response

    @cached_property
    def _items_response(self) -> dict[str, object]:
        return ddm.DeclarationItemsResponse.for_items(
            d.manifest_item for d in self.declarations
        ).to_json()


_EMPTY = Manifest((), (), ddm.declarations_token([]))
_CACHE_SIZE = 4096
# Manifests by (policy object, the facts its rules read). Thousands of Macs share a handful
# of (blueprint, version, build, board) combinations, so a sync usually costs a dictionary
# lookup instead of re-validating and re-hashing every declaration. Keyed by the object (the
# device channel parses each policy revision once and keeps it), never by a caller's token.
_cache: dict[tuple[object, ...], tuple[Policy, Manifest]] = {}


def _key(policy: Policy, facts: DeviceFacts) -> tuple[object, ...]:
    per_device = any(c.applies.enrollment_ids for c in policy.candidates)
    return (
        id(policy),
        facts.os_version,
        facts.build_version,
        facts.supplemental_extra_version,
        facts.device_id,
        facts.enrollment_id if per_device else None,
    )


def build_manifest(
    policy: Policy | None, facts: DeviceFacts, *, user_channel: bool = False
) -> Manifest:
    """Software-update declarations are system-scope: the user channel gets an empty manifest.
    Results are memoised per policy object and the facts its rules read (bounded)."""
    if policy is None or user_channel:
        return _EMPTY
    key = _key(policy, facts)
    hit = _cache.get(key)
    if hit is not None and hit[0] is policy:
        return hit[1]
    manifest = _build(policy, facts)
    if len(_cache) >= _CACHE_SIZE:
        _cache.pop(next(iter(_cache)))
    _cache[key] = (policy, manifest)  # holding the policy keeps its id from being reused
    return manifest


def _build(policy: Policy, facts: DeviceFacts) -> Manifest:
    chosen = policy.select(facts)
    configs = [ddm.Declaration.model_validate(c.declaration) for c in chosen]
    declarations = list(configs)
    if configs:
        declarations.append(ddm.activation_simple(ACTIVATION_ID, [c.identifier for c in configs]))
    expected = tuple(c.enforcement for c in chosen if c.enforcement is not None)
    token = ddm.declarations_token(d.manifest_item for d in declarations)
    return Manifest(tuple(declarations), expected, token)
