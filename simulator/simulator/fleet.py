"""A fleet of simulated Macs syncing with the device channel over HTTP, in both forms NanoMDM
uses: the `-dm` hook's `/ddm/*` routes and whole check-ins on `/mdm/checkin`."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import plistlib
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from simulator.mac import SimulatedMac


@dataclass
class FleetConfig:
    device_channel: str
    hmac_key: str = ""
    checkin_share: float = 0.5  # of Macs that send whole check-ins instead of /ddm/ routes
    failure_rate: float = 0.0
    full_report_every: int = 24  # ticks (a tick stands for an hour)
    concurrency: int = 32
    seed: int = 7


@dataclass
class Fleet:
    config: FleetConfig
    macs: list[SimulatedMac]
    builds: dict[str, str] = field(default_factory=dict)  # version → build, from the catalog
    ticks: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.config.seed)
        self.checkin = {
            m.enrollment_id for m in self.macs if self.rng.random() < self.config.checkin_share
        }

    def _signed(self, body: bytes, headers: dict[str, str]) -> dict[str, str]:
        if self.config.hmac_key:
            digest = hmac.new(self.config.hmac_key.encode(), body, hashlib.sha256).digest()
            headers["X-Hmac-Signature"] = base64.b64encode(digest).decode()
        return headers

    async def _call(
        self, http: httpx.AsyncClient, mac: SimulatedMac, endpoint: str, data: bytes | None = None
    ) -> httpx.Response:
        base = self.config.device_channel.rstrip("/")
        if mac.enrollment_id in self.checkin:
            msg: dict[str, Any] = {
                "MessageType": "DeclarativeManagement",
                "Endpoint": endpoint,
                "UDID": mac.enrollment_id,
            }
            if data is not None:
                msg["Data"] = data
            body = plistlib.dumps(msg)
            return await http.put(
                f"{base}/mdm/checkin", content=body, headers=self._signed(body, {})
            )
        headers = self._signed(data or b"", {"X-Enrollment-ID": mac.enrollment_id})
        if data is None:
            return await http.get(f"{base}/ddm/{endpoint}", headers=headers)
        return await http.put(f"{base}/ddm/{endpoint}", content=data, headers=headers)

    async def sync(self, http: httpx.AsyncClient, mac: SimulatedMac) -> None:
        """tokens → (if changed) declaration-items → fetch new/changed, drop removed."""
        tokens = (await self._call(http, mac, "tokens")).raise_for_status().json()
        token = tokens["SyncTokens"]["DeclarationsToken"]
        if token == mac.token:
            return
        items = (await self._call(http, mac, "declaration-items")).raise_for_status().json()
        listed: dict[tuple[str, str], str] = {}
        for key, category in (
            ("Activations", "activation"),
            ("Configurations", "configuration"),
            ("Assets", "asset"),
            ("Management", "management"),
        ):
            for entry in items["Declarations"][key]:
                listed[(category, entry["Identifier"])] = entry["ServerToken"]
        for gone in [k for k in mac.declarations if k not in listed]:
            del mac.declarations[gone]
        for (category, ident), server_token in listed.items():
            held = mac.declarations.get((category, ident))
            if held is None or held["ServerToken"] != server_token:
                r = await self._call(http, mac, f"declaration/{category}/{ident}")
                mac.declarations[(category, ident)] = r.raise_for_status().json()
        mac.token = items["DeclarationsToken"]

    async def report(self, http: httpx.AsyncClient, mac: SimulatedMac, full: bool) -> None:
        items = mac.changes(full)
        if items is None:
            return
        body = json.dumps({"StatusItems": items, "Errors": [], "FullReport": full}).encode()
        (await self._call(http, mac, "status", body)).raise_for_status()

    async def tick(self, http: httpx.AsyncClient) -> None:
        """One simulated hour: every Mac syncs, moves its update on, reports what changed."""
        full = self.ticks % self.config.full_report_every == 0
        gate = asyncio.Semaphore(self.config.concurrency)

        async def one(mac: SimulatedMac) -> None:
            async with gate:
                await self.sync(http, mac)
                mac.tick(self.rng, self.config.failure_rate, self.builds)
                await self.report(http, mac, full)

        await asyncio.gather(*(one(m) for m in self.macs))
        self.ticks += 1

    def summary(self) -> dict[str, int]:
        return dict(Counter(f"{m.version}/{m.install_state}" for m in self.macs))


def build_fleet(
    config: FleetConfig,
    releases: list[dict[str, Any]],
    devices: list[dict[str, Any]],
    count: int,
    major: int,
    prefix: str = "SIM",
) -> Fleet:
    """`count` Macs on versions of `major` older than its latest, each with a real board id
    that the catalog lists for its version, and the model the catalog gives that board."""
    rng = random.Random(config.seed)
    updates = [
        r
        for r in releases
        if r["major"] == major and r["kind"] != "bsi" and r.get("build") and r["supported_devices"]
    ]
    if not updates:
        raise ValueError(f"the catalog lists no builds of macOS {major}")
    models = {d["board_id"]: d.get("model_identifier") or "Mac" for d in devices}
    newest = max(updates, key=lambda r: [int(x) for x in r["version"].split(".")])
    older = [r for r in updates if r is not newest] or [newest]
    macs = []
    for n in range(count):
        rel = rng.choice(older)
        board = rng.choice(rel["supported_devices"])
        macs.append(
            SimulatedMac(
                f"{prefix}-{n:05d}", board, models.get(board, "Mac"), rel["version"], rel["build"]
            )
        )
    builds = {r["version"]: r["build"] for r in updates}
    return Fleet(config, macs, builds)
