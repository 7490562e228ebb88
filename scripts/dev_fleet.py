"""Against a running `make dev`: a new blueprint with a macOS 26 item, then
`managed-os simulate` with N Macs enrolled on it, until the compliance service's
`/v1/summary` for that blueprint shows 100 % up to date (`make dev-fleet`).

`--mode minimum` (default): the newest 26.x the catalog knows, due in two weeks;
`--mode rolling`: each release due a week after it shipped (older ones already overdue).

usage: python scripts/dev_fleet.py [--devices 100] [--mode minimum|rolling] [--timeout 300]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from datetime import date, timedelta
from typing import Any

import httpx
from dev import DEV, url


def wait_for(what: str, attempt: Any, timeout: float = 60.0) -> Any:
    """Call `attempt` until it returns something (services may still be catching up)."""
    deadline = time.monotonic() + timeout
    while (result := attempt()) is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what}")
        time.sleep(0.5)
    return result


def enforcement(http: httpx.Client, mode: str) -> dict[str, str]:
    if mode == "rolling":
        return {"mode": "rolling", "within": "1w", "at": "09:00"}

    def latest() -> str | None:
        r = http.get(f"{url('catalog')}/v1/majors/26/latest")
        return str(r.json()["latest"]["version"]) if r.status_code == 200 else None

    due = (date.today() + timedelta(days=14)).isoformat()
    version = wait_for("the catalog's first sync", latest)
    return {"mode": "minimum", "version": version, "deadline": due, "at": "17:00"}


def create_blueprint(http: httpx.Client, mode: str) -> str:
    decl = url("declarations")
    name = f"dev fleet {time.strftime('%Y-%m-%d %H:%M:%S')}"
    blueprint = str(
        http.post(f"{decl}/v1/blueprints", json={"name": name}).raise_for_status().json()["id"]
    )
    item = {
        "major": 26,
        "label": f"dev fleet ({mode})",
        "blueprint_ids": [blueprint],
        "installation_method": "continuously_enforce",
        "version_enforcement": enforcement(http, mode),
    }

    def created() -> dict[str, Any] | None:
        # 422 until the declarations service has the release (it arrives as an event).
        r = http.post(f"{decl}/v1/library-items", json=item)
        if r.status_code not in (201, 422):
            r.raise_for_status()
        return dict(r.json()) if r.status_code == 201 else None

    print(f"blueprint {name!r} ({blueprint}), item {wait_for('the item', created)['id']}:")
    print(f"  {item['version_enforcement']}")
    return blueprint


def run(devices: int, mode: str, timeout: float) -> int:
    token_file = DEV / "admin-token"
    if not token_file.exists():
        print("no data/dev/admin-token: start the stack with `make dev` first")
        return 1
    token = token_file.read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(headers=headers, timeout=30) as http:
        blueprint = create_blueprint(http, mode)
        simulate = [
            *(sys.executable, "-m", "managed_os", "simulate", "--devices", str(devices)),
            *("--catalog", url("catalog"), "--device-channel", url("device-channel")),
            *("--token", token, "--blueprint", blueprint, "--ticks", "10000"),
            # New Macs each run: ones left from an earlier run would count as up to date.
            *("--prefix", f"DEV{blueprint[:6].upper()}"),
            *("--hmac-key", (DEV / "hmac-key").read_text().strip()),
        ]
        started = time.monotonic()
        sim = subprocess.Popen(simulate, stdin=subprocess.DEVNULL)
        try:
            summary: dict[str, Any] = {}
            while not (summary.get("total") == devices and summary["percent_up_to_date"] == 100):
                if sim.poll() is not None:
                    print(f"the simulator exited with {sim.returncode}")
                    return 1
                if time.monotonic() - started > timeout:
                    print(f"not 100 % up to date after {timeout:.0f} s")
                    return 1
                time.sleep(2)
                r = http.get(f"{url('compliance')}/v1/summary", params={"blueprint_id": blueprint})
                previous, summary = summary, r.raise_for_status().json()
                if summary["counts"] != previous.get("counts"):
                    counts = {k: v for k, v in summary["counts"].items() if v}
                    print(f"compliance: {counts}  {summary['percent_up_to_date']} %", flush=True)
        finally:
            if sim.poll() is None:
                sim.send_signal(signal.SIGTERM)
                sim.wait(10)
    elapsed = time.monotonic() - started
    print(f"\n{devices} Macs 100 % up to date after {elapsed:.0f} s: {summary['versions']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--mode", choices=["minimum", "rolling"], default="minimum")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds")
    args = parser.parse_args(argv)
    return run(args.devices, args.mode, args.timeout)


if __name__ == "__main__":
    raise SystemExit(main())
