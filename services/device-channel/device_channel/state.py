"""The device channel's per-service memory: built with the service context at startup (never at
import), handed to every unit of work, gone with the process."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from device_channel.status_writer import StatusWriter
from device_channel.sync_cache import SyncCache
from managed_os.manifest import ManifestMemo
from managed_os.policy import Policy

PARSED_POLICIES = 1024


class ParsedPolicies:
    """Policies parsed once per (blueprint, token): a writer reads only the small revision row
    when the policy has not changed. (The token is the declarations service's hash of the
    candidates: same token, same content.)"""

    def __init__(self, size: int = PARSED_POLICIES) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[str, str], Policy] = OrderedDict()

    def get(self, blueprint_id: str, token: str) -> Policy | None:
        return self._entries.get((blueprint_id, token))

    def put(self, policy: Policy) -> None:
        self._entries[(policy.blueprint_id, policy.token)] = policy
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)


@dataclass
class DeviceChannelState:
    """The default (a unit of work made without one) caches nothing across transactions."""

    cache: SyncCache = field(default_factory=lambda: SyncCache(0))
    manifests: ManifestMemo = field(default_factory=ManifestMemo)
    policies: ParsedPolicies = field(default_factory=ParsedPolicies)
    status_writer: StatusWriter | None = None
