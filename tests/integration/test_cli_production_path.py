"""The production path: `managed-os migrate` on PostgreSQL, then `managed-os serve <service>`
configured only by environment, on PostgreSQL + Kafka."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from managed_os.suite import SPECS
from tests.support.infra import free_port

SECRET = "cli-test-secret-0123456789abcdef0123"


def env_for(urls: dict[str, str], kafka: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOS_")}
    for name, url in urls.items():
        prefix = f"MOS_{name.upper().replace('-', '_')}_"
        env[prefix + "DATABASE_URL"] = url
        env[prefix + "BUS"] = "kafka"
        env[prefix + "KAFKA_BOOTSTRAP_SERVERS"] = kafka
        env[prefix + "AUTH_SECRET"] = SECRET
    env["MOS_DEVICE_CHANNEL_HMAC_KEY"] = "cli-hmac"
    return env


def test_migrate_then_serve_each_service_from_environment_alone(pg, kafka):
    urls = {name: pg.create(f"mos_cli_{name.replace('-', '_')}") for name in SPECS}
    env = env_for(urls, kafka)
    migrated = subprocess.run(
        [sys.executable, "-m", "managed_os", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrated.returncode == 0, migrated.stderr
    for name in SPECS:
        assert f"{name}: at revision " in migrated.stdout
    again = subprocess.run(
        [sys.executable, "-m", "managed_os", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0  # idempotent

    port = free_port()
    serve_env = {**env, "MOS_COMPLIANCE_PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "managed_os", "serve", "compliance"],
        env=serve_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        assert ready is not None and ready.status_code == 200
        assert ready.json()["checks"] == {"database": True, "bus": True}
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    # A graceful stop is a clean exit (tests/e2e/test_sigterm.py checks it under load).
    assert proc.returncode == 0, err
    assert '"msg": "service stopped"' in err


def test_serve_refuses_to_start_without_an_hmac_key_for_the_device_channel(pg, kafka):
    env = env_for({"device-channel": pg.create("mos_cli_dc")}, kafka)
    del env["MOS_DEVICE_CHANNEL_HMAC_KEY"]
    result = subprocess.run(
        [sys.executable, "-m", "managed_os", "serve", "device-channel"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "MOS_DEVICE_CHANNEL_HMAC_KEY is required" in result.stderr
