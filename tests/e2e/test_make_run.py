"""`managed-os run` (what `make run` starts) serves all four services within 30 s."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from tests.support.infra import free_port


def test_the_embedded_suite_answers_healthz_on_all_four_services_within_30_seconds(tmp_path):
    base = free_port()
    while any(_busy(base + i) for i in range(4)):
        base = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOS_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "managed_os",
            "run",
            "--data-dir",
            str(tmp_path / "data"),
            "--base-port",
            str(base),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    started = time.monotonic()
    try:
        healthy: set[int] = set()
        while time.monotonic() - started < 30 and len(healthy) < 4:
            for port in range(base, base + 4):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                        healthy.add(port)
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
        assert len(healthy) == 4, f"healthy after 30 s: {sorted(healthy)}"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        for port in range(base, base + 4):
            assert f"http://127.0.0.1:{port}" in out
        assert "Admin token" in out
    finally:
        if proc.poll() is None:
            proc.kill()


def _busy(port: int) -> bool:
    """True unless the port can be bound right now (connect-only checks miss ports that are
    taken but not listening)."""
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False
