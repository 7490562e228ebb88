"""The device channel's read cache: what a DDM sync needs, kept in this process.

A sync (`tokens`, `declaration-items`, `declaration/...`) needs a device's blueprint, facts and
manifest timestamp, and its blueprint's policy. Both live in the database, which every writer
updates under row locks (`repository.py`); this cache keeps a copy per enrollment id and per
blueprint so a sync that hits it touches no database at all.

Contract:
- A key is `("device", enrollment_id)` or `("policy", blueprint_id)`. `invalidate` drops the
  entry and records that the key changed; the unit of work calls it after every commit that
  changed a device's sync fields or a policy (this process), and the LISTEN connection calls it
  for every `NOTIFY` another replica's commit sent (`listener.py`).
- Race guard: a reader takes `epoch()` *before* it reads the database and passes it to `put_*`;
  the value is kept only if no invalidation of that key arrived since. So a reader that read
  the old row while a writer committed can never store it after the writer's invalidation.
- While disabled (size 0, or on PostgreSQL before LISTEN is up and whenever it is lost) nothing
  is served or stored: an invalidation could be missed, so every sync reads the database.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from managed_os import ddm
from managed_os.manifest import Manifest, compact_json
from managed_os.policy import DeviceFacts, Policy

Key = tuple[str, str]
DEVICE, POLICY = "device", "policy"
# Invalidation records kept for the race guard; an older record is folded into `_floor`, which
# only makes a slow reader's store fail (a miss), never lets a stale one through.
RECORDS: Final = 65_536
POLICY_SLOTS: Final = 4_096


class Absent:
    """A blueprint with no stored policy (cached too: such devices sync often)."""


ABSENT: Final = Absent()


@dataclass(slots=True, eq=False)
class DeviceSnapshot:
    """The fields of a device row a sync reads; the tokens body is memoised per manifest."""

    blueprint_id: str | None
    facts: DeviceFacts
    manifest_changed_at: datetime
    _tokens: tuple[Manifest, bytes] | None = field(default=None, repr=False)

    def tokens_body(self, manifest: Manifest) -> bytes:
        """`TokensResponse` for `manifest` (the manifest's token, this device's timestamp)."""
        memo = self._tokens
        if memo is not None and memo[0] is manifest:
            return memo[1]
        body = compact_json(ddm.TokensResponse(manifest.token, self.manifest_changed_at).to_json())
        self._tokens = (manifest, body)
        return body


class SyncCache:
    def __init__(self, size: int) -> None:
        self.size = size
        self.enabled = False
        self.hits = self.misses = 0  # syncs answered from memory / from the database
        self._devices: OrderedDict[str, DeviceSnapshot] = OrderedDict()
        self._policies: OrderedDict[str, Policy | Absent] = OrderedDict()
        self._epoch = 0
        self._floor = 0
        self._changed: OrderedDict[Key, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._devices)

    def __contains__(self, enrollment_id: object) -> bool:
        return enrollment_id in self._devices

    def epoch(self) -> int:
        """Take this before reading the database; hand it to `put_device`/`put_policy`."""
        return self._epoch

    def device(self, enrollment_id: str) -> DeviceSnapshot | None:
        snap = self._devices.get(enrollment_id)
        if snap is not None:
            self._devices.move_to_end(enrollment_id)
        return snap

    def policy(self, blueprint_id: str) -> Policy | Absent | None:
        """The cached policy, `ABSENT` if the blueprint is known to have none, None if unknown."""
        return self._policies.get(blueprint_id)

    def put_device(
        self, enrollment_id: str, snap: DeviceSnapshot, epoch: int, *, only_if_absent: bool = False
    ) -> bool:
        if not self.fresh((DEVICE, enrollment_id), epoch):
            return False
        if only_if_absent and enrollment_id in self._devices:
            return False
        self._devices[enrollment_id] = snap
        self._devices.move_to_end(enrollment_id)
        if len(self._devices) > self.size:
            self._devices.popitem(last=False)
        return True

    def put_policy(self, blueprint_id: str, policy: Policy | None, epoch: int) -> bool:
        if not self.fresh((POLICY, blueprint_id), epoch):
            return False
        self._policies[blueprint_id] = ABSENT if policy is None else policy
        if len(self._policies) > POLICY_SLOTS:
            self._policies.popitem(last=False)
        return True

    def invalidate(self, keys: Iterable[Key]) -> None:
        for key in keys:
            self._epoch += 1
            self._changed[key] = self._epoch
            self._changed.move_to_end(key)
            kind, ident = key
            if kind == DEVICE:
                self._devices.pop(ident, None)
            elif kind == POLICY:
                self._policies.pop(ident, None)
        while len(self._changed) > RECORDS:
            _, dropped = self._changed.popitem(last=False)
            self._floor = max(self._floor, dropped)

    def clear(self) -> None:
        """Forget everything; a read that began before this stores nothing."""
        self._epoch += 1
        self._floor = self._epoch
        self._changed.clear()
        self._devices.clear()
        self._policies.clear()

    def enable(self) -> None:
        self.clear()
        self.enabled = self.size > 0

    def disable(self) -> None:
        self.enabled = False
        self.clear()

    def fresh(self, key: Key, epoch: int) -> bool:
        """Whether a value of `key` read after `epoch` was taken may be stored now."""
        return self.enabled and max(self._changed.get(key, 0), self._floor) <= epoch
