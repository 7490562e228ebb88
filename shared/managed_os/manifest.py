"""A device's manifest: the policy candidates that apply to its facts, plus one activation.

Pure. The DeclarationsToken is computed over the sorted manifest, so it is stable across
requests and changes only when the set of (category, identifier, ServerToken) changes.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def build_manifest(
    policy: Policy | None, facts: DeviceFacts, *, user_channel: bool = False
) -> Manifest:
    """Software-update declarations are system-scope: the user channel gets an empty manifest."""
    if policy is None or user_channel:
        return Manifest((), (), ddm.declarations_token([]))
    chosen = policy.select(facts)
    configs = [ddm.Declaration.model_validate(c.declaration) for c in chosen]
    declarations = list(configs)
    if configs:
        declarations.append(ddm.activation_simple(ACTIVATION_ID, [c.identifier for c in configs]))
    expected = tuple(c.enforcement for c in chosen if c.enforcement is not None)
    token = ddm.declarations_token(d.manifest_item for d in declarations)
    return Manifest(tuple(declarations), expected, token)
