"""Check JSON values against Apple's own schema YAML (`apple/device-management`).

The YAML files are verbatim copies under `tests/data/apple/` (see its README). Their format is
described in Apple's `docs/schema.md`: a file's `payloadkeys` is a list of key specs, each with
`key`, `type` (`<string>`, `<integer>`, `<real>`, `<boolean>`, `<date>`, `<data>`, `<array>`,
`<dictionary>`, `<any>`), `presence` (`required` / `optional`) and, for containers, `subkeys`
(a dictionary's keys, or the single spec every array element matches). `rangelist`, `range`,
`repetition` and `format` constrain values where the schema gives them.

Every check returns a list of readable error strings; an empty list means valid.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import yaml

APPLE_DATA = Path(__file__).resolve().parents[1] / "data" / "apple"
DECLARATION_BASE = "declarative/declarations/declarationbase.yaml"
DECLARATIONS_DIR = "declarative/declarations"
ITEMS_RESPONSE = "declarative/protocol/declarationitemsresponse.yaml"
TOKENS_RESPONSE = "declarative/protocol/tokensresponse.yaml"

ENFORCEMENT_SPECIFIC = "com.apple.configuration.softwareupdate.enforcement.specific"
MAX_OCTETS = 64  # Identifier, ServerToken: "should not exceed 64 octets" (declarationbase.yaml)

# Rules Apple states in prose rather than as a YAML `format` (enforcement.specific.yaml:
# "yyyy-mm-ddThh:mm:ss ... doesn't include a time zone offset"; "the OS version number, for
# example, 16.1" -- a BSI is pinned by TargetBuildVersion, never by a "(a)" in the version).
EXTRA_FORMATS: dict[str, dict[str, tuple[str, str]]] = {
    ENFORCEMENT_SPECIFIC: {
        "TargetLocalDateTime": (
            r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}",
            "RFC 3339 local date-time without offset or fractional seconds",
        ),
        "TargetOSVersion": (r"\d+(\.\d+){1,2}", "a plain OS version such as 26.3.1"),
    }
}
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")  # SyncTokens.Timestamp

Spec = Mapping[str, Any]


@cache
def load_schema(relative: str) -> dict[str, Any]:
    """One YAML schema file, by its path under `tests/data/apple/`."""
    loaded = yaml.safe_load((APPLE_DATA / relative).read_text(encoding="utf-8"))
    if not isinstance(loaded, dict) or not isinstance(loaded.get("payloadkeys"), list):
        raise ValueError(f"{relative} is not an Apple schema file (no payloadkeys list)")
    return loaded


@cache
def declaration_schemas() -> dict[str, str]:
    """Declaration type → schema file, from each file's `payload.declarationtype`."""
    found: dict[str, str] = {}
    for path in sorted((APPLE_DATA / DECLARATIONS_DIR).rglob("*.yaml")):
        relative = path.relative_to(APPLE_DATA).as_posix()
        declaration_type = load_schema(relative).get("payload", {}).get("declarationtype")
        if isinstance(declaration_type, str) and declaration_type != "any":
            found[declaration_type] = relative
    return found


def _type_name(value: object) -> str:
    return type(value).__name__


def _scalar_ok(kind: str, value: object) -> bool | None:
    """Whether `value` has schema type `kind`; None for a type this checker doesn't know."""
    if kind == "<any>":
        return True
    if kind == "<string>":
        return isinstance(value, str)
    if kind == "<integer>":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "<real>":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "<boolean>":
        return isinstance(value, bool)
    if kind == "<date>":
        return isinstance(value, str)
    if kind == "<data>":
        return isinstance(value, str | bytes)
    if kind == "<dictionary>":
        return isinstance(value, dict)
    if kind == "<array>":
        return isinstance(value, list)
    return None


def _bounds(spec: Spec, name: str) -> tuple[Any, Any]:
    bounds = spec.get(name)
    if not isinstance(bounds, Mapping):
        return None, None
    return bounds.get("min"), bounds.get("max")


def validate_value(value: object, spec: Spec, where: str) -> list[str]:
    """`value` against one key spec (its type, constraints and subkeys)."""
    kind = str(spec.get("type"))
    ok = _scalar_ok(kind, value)
    if ok is None:
        return [f"{where}: schema type {kind!r} is not supported by this checker"]
    if not ok:
        return [f"{where}: expected {kind}, got {_type_name(value)} {value!r}"]
    errors: list[str] = []
    rangelist = spec.get("rangelist")
    if isinstance(rangelist, list) and not isinstance(value, dict | list):
        if value not in rangelist:
            errors.append(f"{where}: {value!r} is not one of {rangelist!r}")
    low, high = _bounds(spec, "range")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if low is not None and value < low:
            errors.append(f"{where}: {value!r} is below the minimum {low!r}")
        if high is not None and value > high:
            errors.append(f"{where}: {value!r} is above the maximum {high!r}")
    pattern = spec.get("format")
    if isinstance(pattern, str) and isinstance(value, str) and not re.fullmatch(pattern, value):
        errors.append(f"{where}: {value!r} does not match the format {pattern!r}")
    subkeys = spec.get("subkeys")
    if isinstance(value, dict) and isinstance(subkeys, list):
        errors += validate_keys(value, subkeys, where)
    if isinstance(value, list):
        errors += _validate_array(value, spec, where)
    return errors


def _validate_array(value: list[Any], spec: Spec, where: str) -> list[str]:
    errors: list[str] = []
    low, high = _bounds(spec, "repetition")
    if low is not None and len(value) < low:
        errors.append(f"{where}: {len(value)} items, fewer than the minimum {low}")
    if high is not None and len(value) > high:
        errors.append(f"{where}: {len(value)} items, more than the maximum {high}")
    subkeys = spec.get("subkeys")
    if not isinstance(subkeys, list) or not subkeys:
        return errors
    if len(subkeys) != 1:
        return [*errors, f"{where}: schema array has {len(subkeys)} item specs, expected 1"]
    item_spec = subkeys[0]
    for index, element in enumerate(value):
        errors += validate_value(element, item_spec, f"{where}[{index}]")
        rangelist = spec.get("rangelist")
        if isinstance(rangelist, list) and element not in rangelist:
            errors.append(f"{where}[{index}]: {element!r} is not one of {rangelist!r}")
    return errors


def validate_keys(value: object, specs: Sequence[Spec], where: str) -> list[str]:
    """A dictionary against a list of key specs: required keys present, no key the schema
    doesn't define, each value valid. A spec whose key is `ANY` admits any other key name."""
    if not isinstance(value, dict):
        return [f"{where}: expected <dictionary>, got {_type_name(value)} {value!r}"]
    by_key = {str(spec.get("key")): spec for spec in specs}
    wildcard = by_key.get("ANY")
    errors: list[str] = []
    for name, spec in by_key.items():
        if name != "ANY" and spec.get("presence") == "required" and name not in value:
            errors.append(f"{where}: required key {name!r} is missing")
    for name, element in value.items():
        found = by_key.get(name) if name != "ANY" else None
        found = found if found is not None else wildcard
        if found is None:
            errors.append(f"{where}: key {name!r} is not defined by the schema")
            continue
        errors += validate_value(element, found, f"{where}.{name}")
    return errors


def validate_document(value: object, schema_file: str, where: str | None = None) -> list[str]:
    """A whole document (a protocol response, a declaration payload) against a schema file's
    `payloadkeys`."""
    schema = load_schema(schema_file)
    return validate_keys(value, schema["payloadkeys"], where or str(schema.get("title")))


def _octets(value: object, where: str) -> list[str]:
    if isinstance(value, str) and len(value.encode("utf-8")) > MAX_OCTETS:
        size = len(value.encode("utf-8"))
        return [f"{where}: {size} UTF-8 octets, more than {MAX_OCTETS}"]
    return []


def validate_payload(declaration_type: str, payload: object, where: str = "Payload") -> list[str]:
    """A declaration's Payload against the schema whose `payload.declarationtype` is its Type,
    plus the rules Apple states only in prose (`EXTRA_FORMATS`)."""
    schema_file = declaration_schemas().get(declaration_type)
    if schema_file is None:
        return [f"Type: no Apple schema for declaration type {declaration_type!r}"]
    errors = validate_document(payload, schema_file, where)
    if isinstance(payload, dict):
        for key, (pattern, meaning) in EXTRA_FORMATS.get(declaration_type, {}).items():
            value = payload.get(key)
            if isinstance(value, str) and not re.fullmatch(pattern, value):
                errors.append(f"{where}.{key}: {value!r} is not {meaning}")
    return errors


def validate_declaration(declaration: object) -> list[str]:
    """A full declaration: the envelope against declarationbase.yaml (Type, Identifier,
    ServerToken, Payload; Identifier and ServerToken at most 64 octets), then the Payload
    against its type's schema."""
    errors = validate_document(declaration, DECLARATION_BASE, "declaration")
    if not isinstance(declaration, dict):
        return errors
    errors += _octets(declaration.get("Identifier"), "declaration.Identifier")
    errors += _octets(declaration.get("ServerToken"), "declaration.ServerToken")
    declaration_type = declaration.get("Type")
    if isinstance(declaration_type, str) and "Payload" in declaration:
        errors += validate_payload(declaration_type, declaration["Payload"], "declaration.Payload")
    return errors


def validate_items_response(response: object) -> list[str]:
    """A `DeclarationItemsResponse` (the manifest served at declaration-items)."""
    errors = validate_document(response, ITEMS_RESPONSE)
    if isinstance(response, dict) and isinstance(response.get("Declarations"), dict):
        for group, items in response["Declarations"].items():
            for index, item in enumerate(items if isinstance(items, list) else []):
                if isinstance(item, dict):
                    for key in ("Identifier", "ServerToken"):
                        where = f"Declarations.{group}[{index}].{key}"
                        errors += _octets(item.get(key), where)
    return errors


def validate_tokens_response(response: object) -> list[str]:
    """A `TokensResponse`. tokensresponse.yaml leaves `SyncTokens` without subkeys, so its
    content (Apple's SynchronizationTokens: DeclarationsToken, Timestamp) is checked here."""
    errors = validate_document(response, TOKENS_RESPONSE)
    if not isinstance(response, dict) or not isinstance(response.get("SyncTokens"), dict):
        return errors
    sync = response["SyncTokens"]
    spec = next(s for s in load_schema(TOKENS_RESPONSE)["payloadkeys"] if s["key"] == "SyncTokens")
    if spec.get("subkeys"):
        return errors  # a newer schema describes SyncTokens itself: already checked
    token, stamp = sync.get("DeclarationsToken"), sync.get("Timestamp")
    if not isinstance(token, str):
        errors.append(f"SyncTokens.DeclarationsToken: expected <string>, got {token!r}")
    if not isinstance(stamp, str) or not TIMESTAMP.fullmatch(stamp):
        errors.append(f"SyncTokens.Timestamp: {stamp!r} is not YYYY-MM-DDTHH:MM:SSZ")
    for name in sorted(set(sync) - {"DeclarationsToken", "Timestamp"}):
        errors.append(f"SyncTokens: key {name!r} is not a synchronization token")
    return errors
