"""What a major's releases mean for one Mac: which releases support its board id, the latest
it can run, and the chain of releases a device on an older version has missed.

A release supports board id d when its own device list holds d; a release whose list is
unknown (known only from SOFA) supports what the major supports — the union of its
releases' lists — never "every device". An unknown board id (None: the Mac has not reported
`softwareupdate.device-id` yet) is assumed supported by every release.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

from managed_os.events import ReleaseData
from managed_os.versions import OSVersion, parse_version

Board = str | None


@dataclass
class MajorView:
    major: int
    releases: Sequence[ReleaseData]
    _chains: dict[tuple[bool, ...], list[ReleaseData]] = field(default_factory=dict, repr=False)

    @cached_property
    def updates(self) -> list[ReleaseData]:
        ups = [r for r in self.releases if r.major == self.major and r.kind != "bsi"]
        return sorted(
            ups, key=lambda r: (self.version(r), -len(r.supported_devices), r.build or "")
        )

    @cached_property
    def _versions(self) -> dict[int, OSVersion]:
        return {id(r): parse_version(r.version) for r in self.releases}

    def version(self, rel: ReleaseData) -> OSVersion:
        return self._versions[id(rel)]

    @cached_property
    def bsis(self) -> list[ReleaseData]:
        return [r for r in self.releases if r.major == self.major and r.kind == "bsi"]

    @cached_property
    def boards(self) -> frozenset[str]:
        """Every board id some release of the major lists."""
        return frozenset(d for r in self.updates for d in r.supported_devices)

    @cached_property
    def _device_sets(self) -> dict[int, frozenset[str]]:
        return {id(r): frozenset(r.supported_devices) for r in self.releases}

    @cached_property
    def _widest(self) -> int:
        return max((len(r.supported_devices) for r in self.updates), default=0)

    def supports(self, rel: ReleaseData, board: Board) -> bool:
        if board is None:
            # A Mac whose board id is unknown: any release made for Macs in general, never one
            # built for a few new models (26.3.2 for the MacBook Neo alone).
            return not rel.devices_known or 2 * len(rel.supported_devices) >= self._widest
        if rel.devices_known:
            return board in self._device_sets[id(rel)]
        return board in self.boards

    def _signature(self, board: Board) -> tuple[bool, ...]:
        return tuple(self.supports(r, board) for r in [*self.updates, *self.bsis])

    @cached_property
    def groups(self) -> list[list[Board]]:
        """Boards that every release treats alike, together (a handful per major: the Macs a
        device-specific build was made for, the ones a release dropped...). Rules are worked
        out once per group. A Mac whose board id is unknown joins the group supported by
        everything."""
        by_signature: dict[tuple[bool, ...], list[Board]] = {}
        for board in [*sorted(self.boards), None]:
            by_signature.setdefault(self._signature(board), []).append(board)
        return list(by_signature.values())

    def chain(self, board: Board) -> list[ReleaseData]:
        """One release per version that supports `board` (its own build when several),
        oldest first."""
        signature = self._signature(board)
        if signature not in self._chains:
            by_version: dict[OSVersion, ReleaseData] = {}
            for rel in self.updates:  # within a version, the widest build comes first
                v = self.version(rel)
                if v not in by_version and self.supports(rel, board):
                    by_version[v] = rel
                elif v in by_version and rel.devices_known and board in rel.supported_devices:
                    by_version[v] = rel  # the build made for this board
            self._chains[signature] = [by_version[v] for v in sorted(by_version)]
        return self._chains[signature]

    def latest(self, board: Board) -> ReleaseData | None:
        chain = self.chain(board)
        return chain[-1] if chain else None

    def of_version(self, version: OSVersion, board: Board) -> ReleaseData | None:
        for rel in self.chain(board):
            if self.version(rel) == version:
                return rel
        return None
