"""Synchronisation tokens and the manifest (`declarative/protocol/tokensresponse.yaml`,
`declarative/protocol/declarationitemsresponse.yaml`, Apple page `synchronizationtokens`).

The device compares `DeclarationsToken` for equality only; it must change whenever a declaration
is added, changed or removed. Ours is the hex SHA-256 of the canonical JSON of the *sorted*
`[category, Identifier, ServerToken]` triples, so it never depends on storage order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from managed_os.ddm.categories import Category, ManifestItem
from managed_os.ddm.codec import canonical_json, expect, load_json_object
from managed_os.ddm.errors import DDMProtocolError

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # "YYYY-mm-ddTHH:MM:SSZ" (synchronizationtokens)


def _item(item: ManifestItem | tuple[str, str, str]) -> ManifestItem:
    category, identifier, token = item
    try:
        return ManifestItem(Category(category), identifier, token)
    except ValueError as exc:
        raise ValueError(f"unknown declaration category {category!r}") from exc


def declarations_token(items: Iterable[ManifestItem | tuple[str, str, str]]) -> str:
    """Hex SHA-256 over the sorted `(category, identifier, server_token)` triples.

    Independent of input order; changes when an item is added, removed or its token changes.
    Categories are the singular names (`configuration`); an unknown one raises `ValueError`.
    """
    triples = sorted([str(i.category), i.identifier, i.server_token] for i in map(_item, items))
    return hashlib.sha256(canonical_json(triples)).hexdigest()


def format_timestamp(value: datetime) -> str:
    """UTC `YYYY-mm-ddTHH:MM:SSZ`; a naive datetime is refused as ambiguous."""
    if value.tzinfo is None:
        raise ValueError("sync token timestamps need a time-zone-aware datetime")
    return value.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def parse_timestamp(text: str, where: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise DDMProtocolError(f"{where} {text!r} is not an RFC 3339 timestamp") from exc
    if value.tzinfo is None:
        raise DDMProtocolError(f"{where} {text!r} has no time zone (expected a trailing Z)")
    return value.astimezone(UTC)


@dataclass(frozen=True)
class TokensResponse:
    """`TokensResponse`: `{"SyncTokens": {"DeclarationsToken": str, "Timestamp": str}}`.

    Served at the `tokens` endpoint and sent as `Data` of the `DeclarativeManagement` command.
    """

    declarations_token: str
    timestamp: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "SyncTokens": {
                "DeclarationsToken": self.declarations_token,
                "Timestamp": format_timestamp(self.timestamp),
            }
        }

    @classmethod
    def from_json(cls, raw: bytes | str | Mapping[str, Any]) -> TokensResponse:
        data = load_json_object(raw, "TokensResponse")
        sync = expect(data.get("SyncTokens"), dict, "SyncTokens")
        token = expect(sync.get("DeclarationsToken"), str, "SyncTokens.DeclarationsToken")
        stamp = expect(sync.get("Timestamp"), str, "SyncTokens.Timestamp")
        return cls(token, parse_timestamp(stamp, "SyncTokens.Timestamp"))


@dataclass(frozen=True)
class DeclarationItemsResponse:
    """`DeclarationItemsResponse`: the manifest served at `declaration-items`.

    `{"Declarations": {"Activations": [...], "Configurations": [...], "Assets": [...],
    "Management": [...]}, "DeclarationsToken": str}`, each element
    `{"Identifier", "ServerToken"}`; all four arrays are always present.
    """

    items: tuple[ManifestItem, ...]
    declarations_token: str

    @classmethod
    def for_items(
        cls, items: Iterable[ManifestItem | tuple[str, str, str]]
    ) -> DeclarationItemsResponse:
        """The manifest of `items`, sorted, with its `declarations_token`."""
        normalised = tuple(sorted(map(_item, items)))
        return cls(normalised, declarations_token(normalised))

    def to_json(self) -> dict[str, Any]:
        groups: dict[str, list[dict[str, str]]] = {c.manifest_key: [] for c in Category}
        for item in sorted(self.items):
            entry = {"Identifier": item.identifier, "ServerToken": item.server_token}
            groups[item.category.manifest_key].append(entry)
        return {"Declarations": groups, "DeclarationsToken": self.declarations_token}

    @classmethod
    def from_json(cls, raw: bytes | str | Mapping[str, Any]) -> DeclarationItemsResponse:
        data = load_json_object(raw, "DeclarationItemsResponse")
        declarations = expect(data.get("Declarations"), dict, "Declarations")
        token = expect(data.get("DeclarationsToken"), str, "DeclarationsToken")
        items: list[ManifestItem] = []
        for category in Category:
            where = f"Declarations.{category.manifest_key}"
            for index, entry in enumerate(
                expect(declarations.get(category.manifest_key, []), list, where)
            ):
                entry = expect(entry, dict, f"{where}[{index}]")
                identifier = expect(entry.get("Identifier"), str, f"{where}[{index}].Identifier")
                server = expect(entry.get("ServerToken"), str, f"{where}[{index}].ServerToken")
                items.append(ManifestItem(category, identifier, server))
        return cls(tuple(items), token)


def parse_tokens_response(raw: bytes | str | Mapping[str, Any]) -> TokensResponse:
    """`TokensResponse.from_json`; raises `DDMProtocolError`."""
    return TokensResponse.from_json(raw)


def parse_declaration_items_response(
    raw: bytes | str | Mapping[str, Any],
) -> DeclarationItemsResponse:
    """`DeclarationItemsResponse.from_json`; raises `DDMProtocolError`."""
    return DeclarationItemsResponse.from_json(raw)
