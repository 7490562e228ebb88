"""`managed-os simulate`: register N simulated Macs on a blueprint and run them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

from managed_os.rest import fetch_all
from simulator.fleet import Fleet, FleetConfig, build_fleet


@dataclass
class SimulateArgs:
    catalog: str
    device_channel: str
    token: str
    blueprint: str | None
    devices: int = 100
    major: int = 26
    ticks: int = 10
    tick_seconds: float = 1.0
    failure_rate: float = 0.0
    hmac_key: str = ""
    checkin_share: float = 0.5
    prefix: str = "SIM"  # enrollment ids are <prefix>-00000, <prefix>-00001, …


async def prepare(http: httpx.AsyncClient, args: SimulateArgs) -> Fleet:
    headers = {"Authorization": f"Bearer {args.token}"}
    catalog = args.catalog.rstrip("/")
    releases = await fetch_all(http, f"{catalog}/v1/releases", args.token)
    devices = (await http.get(f"{catalog}/v1/devices", headers=headers)).raise_for_status()
    config = FleetConfig(
        device_channel=args.device_channel,
        hmac_key=args.hmac_key,
        failure_rate=args.failure_rate,
        checkin_share=args.checkin_share,
    )
    fleet = build_fleet(
        config, releases, devices.json()["items"], args.devices, args.major, args.prefix
    )
    dc = args.device_channel.rstrip("/")
    for mac in fleet.macs:
        (
            await http.post(
                f"{dc}/v1/devices",
                headers=headers,
                json={
                    "enrollment_id": mac.enrollment_id,
                    "blueprint_id": args.blueprint,
                    "model": mac.model,
                },
            )
        ).raise_for_status()
    return fleet


async def simulate(args: SimulateArgs) -> Fleet:
    async with httpx.AsyncClient(timeout=60) as http:
        fleet = await prepare(http, args)
        for _ in range(args.ticks):
            await fleet.tick(http)
            print(f"tick {fleet.ticks}: {fleet.summary()}", flush=True)
            await asyncio.sleep(args.tick_seconds)
    return fleet
