"""Declaration categories and manifest items (`declarative/declarations/declarationbase.yaml`)."""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple


class Category(StrEnum):
    """The four declaration categories, spelled as in the check-in `Endpoint`
    (`declaration/<category>/<Identifier>`, singular)."""

    ACTIVATION = "activation"
    ASSET = "asset"
    CONFIGURATION = "configuration"
    MANAGEMENT = "management"

    @property
    def manifest_key(self) -> str:
        """Array name in `DeclarationItemsResponse.Declarations` (`Configurations`)."""
        return _MANIFEST_KEYS[self]

    @property
    def status_key(self) -> str:
        """Array name in the `management.declarations` status item (`configurations`)."""
        return _MANIFEST_KEYS[self].lower()


_MANIFEST_KEYS = {
    Category.ACTIVATION: "Activations",
    Category.ASSET: "Assets",
    Category.CONFIGURATION: "Configurations",
    Category.MANAGEMENT: "Management",
}


def category_for_type(declaration_type: str) -> Category | None:
    """Category of a declaration `Type`: `com.apple.configuration.*` -> configuration, and
    likewise for `activation`, `asset` and `management`; `None` for anything else."""
    parts = declaration_type.split(".")
    if len(parts) < 4 or parts[:2] != ["com", "apple"] or not all(parts[3:]):
        return None
    try:
        return Category(parts[2])
    except ValueError:
        return None


class ManifestItem(NamedTuple):
    """One entry of a device's manifest; the unit the `DeclarationsToken` is computed over."""

    category: Category
    identifier: str
    server_token: str
