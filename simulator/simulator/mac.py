"""One simulated Mac: its facts, the declarations it holds, and an update state machine.

On an enforcement it moves downloading → prepared → installing → the target (or `failed` with
a reason, at the fleet's failure rate), one step per tick, like `softwareupdate.install-state`.
Its status is reported as a Mac does: what changed since the last report (incremental), and a
full report once a (simulated) day.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

STEPS = ("downloading", "prepared", "installing")


@dataclass
class SimulatedMac:
    enrollment_id: str
    board_id: str
    model: str
    version: str
    build: str
    declarations: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    token: str | None = None
    install_state: str = "none"
    step: int = -1
    target: tuple[str, str | None] | None = None
    failures: int = 0
    failure_reason: str | None = None
    reported: dict[str, Any] = field(default_factory=dict)

    def enforcements(self) -> list[dict[str, Any]]:
        return [
            d["Payload"]
            for (category, _), d in self.declarations.items()
            if category == "configuration"
            and d["Type"] == "com.apple.configuration.softwareupdate.enforcement.specific"
        ]

    def tick(self, rng: random.Random, failure_rate: float, builds: dict[str, str]) -> None:
        """Advance the update one step (the Mac installs by itself once enforced)."""
        wanted = sorted(self.enforcements(), key=lambda p: p["TargetLocalDateTime"])
        if not wanted:
            self.install_state, self.step, self.target = "none", -1, None
            return
        payload = wanted[0]
        target = (payload["TargetOSVersion"], payload.get("TargetBuildVersion"))
        if target != self.target:
            self.target, self.step, self.install_state = target, -1, "none"
        if self.install_state == "failed":
            return
        self.step += 1
        if self.step < len(STEPS):
            self.install_state = STEPS[self.step]
            if self.install_state == "installing" and rng.random() < failure_rate:
                self.install_state = "failed"
                self.failures += 1
                self.failure_reason = "Simulated: not enough free disk space"
            return
        version, build = target
        self.version = version
        self.build = build or builds.get(version, self.build)
        self.install_state, self.step, self.target = "none", -1, None

    def status_items(self) -> dict[str, Any]:
        pending = (
            {"os-version": self.target[0], "build-version": self.target[1] or ""}
            if self.target
            else {"os-version": "", "build-version": ""}
        )
        configurations = [
            {
                "identifier": ident,
                "server-token": d["ServerToken"],
                "active": True,
                "valid": "valid",
            }
            for (category, ident), d in sorted(self.declarations.items())
            if category == "configuration"
        ]
        return {
            "device": {
                "operating-system": {
                    "version": self.version,
                    "build-version": self.build,
                    "family": "macOS",
                },
                "model": {"identifier": self.model, "family": "Mac"},
            },
            "softwareupdate": {
                "device-id": self.board_id,
                "install-state": self.install_state,
                "pending-version": pending,
                "failure-reason": {
                    "count": self.failures,
                    **({"reason": self.failure_reason} if self.failure_reason else {}),
                },
            },
            "management": {
                "declarations": {
                    "activations": [],
                    "assets": [],
                    "management": [],
                    "configurations": configurations,
                }
            },
        }

    def changes(self, full: bool) -> dict[str, Any] | None:
        """The report to send: everything (full), or the top-level items that changed."""
        now = self.status_items()
        if full:
            self.reported = now
            return now
        delta: dict[str, Any] = {}
        for group, items in now.items():
            for name, value in items.items():
                if self.reported.get(group, {}).get(name) != value:
                    delta.setdefault(group, {})[name] = value
        self.reported = now
        return delta or None
