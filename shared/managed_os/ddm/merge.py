"""Flattening and merging status (`declarative/protocol/statusreport.yaml`, `FullReport`).

Status item names are dotted paths into the nested `StatusItems` object, but the nesting alone
does not say where an item name ends: `softwareupdate.pending-version` is an object-valued item,
not three items. `KNOWN_ITEMS` lists the item names from Apple's schema; flattening stops at a
known name and keeps its value whole. Below an unknown name, every non-object value is a leaf.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from managed_os.ddm.status import StatusReport

DECLARATIONS_ITEM = "management.declarations"

# Every status item whose schema we hold (reference copy of apple/device-management).
KNOWN_ITEMS = frozenset(
    {
        "device.model.family",
        "device.model.identifier",
        "device.model.marketing-name",
        "device.model.number",
        "device.operating-system.build-version",
        "device.operating-system.family",
        "device.operating-system.marketing-name",
        "device.operating-system.supplemental.build-version",
        "device.operating-system.supplemental.extra-version",
        "device.operating-system.version",
        "management.client-capabilities",
        DECLARATIONS_ITEM,
        "softwareupdate.beta-enrollment",
        "softwareupdate.device-id",
        "softwareupdate.failure-reason",
        "softwareupdate.install-reason",
        "softwareupdate.install-state",
        "softwareupdate.pending-version",
    }
)


def flatten_status(items: Mapping[str, Any]) -> dict[str, Any]:
    """Nested `StatusItems` -> `{dotted item name: value}`.

    Values of `KNOWN_ITEMS` stay as they are, objects included (`softwareupdate.pending-version`
    -> `{"os-version": ..., "build-version": ...}`); unknown objects are walked down to their
    non-object leaves; empty unknown objects vanish.
    """
    flat: dict[str, Any] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if name not in KNOWN_ITEMS and (type(value) is dict or isinstance(value, Mapping)):
                walk(value, name)
            else:
                flat[name] = value

    walk(items, "")
    return flat


def unflatten_status(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of `flatten_status`: dotted names back to nested objects."""
    nested: dict[str, Any] = {}
    for name in sorted(flat):
        *parents, leaf = name.split(".")
        node = nested
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"status item {name!r} overlaps the value of a shorter name")
            node = child
        node[leaf] = copy.deepcopy(flat[name])
    return nested


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def merge_status(stored: Mapping[str, Any], report: StatusReport) -> dict[str, Any]:
    """The device's status after `report`, as nested `StatusItems`; `stored` is not modified.

    - `FullReport: true`: the report replaces everything ("servers use this to replace their
      entire status for the device").
    - Otherwise the report is incremental and is merged item by item: each dotted item it
      carries (see `flatten_status`) replaces the stored value of that item, and any stored item
      it overlaps; items it does not carry are kept. Item values are replaced whole, never
      deep-merged (a new `pending-version` without `target-local-date-time` drops the old one).
    - `management.declarations` is the exception: an incremental report replaces only the
      category arrays it carries (`configurations`, ...) and keeps the others.
    """
    if report.full_report:
        return copy.deepcopy(dict(report.items))
    merged = flatten_status(stored)
    for name, value in flatten_status(report.items).items():
        previous = merged.get(name)
        for existing in [n for n in merged if _overlaps(n, name)]:
            del merged[existing]
        if (
            name == DECLARATIONS_ITEM
            and isinstance(previous, Mapping)
            and isinstance(value, Mapping)
        ):
            value = {**previous, **value}
        merged[name] = value
    return unflatten_status(merged)
