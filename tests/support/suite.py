"""Start the four services for end-to-end tests, on either backend."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from managed_os import auth
from managed_os.bus.inprocess import InProcessBus
from managed_os.clock import Clock
from managed_os.suite import SPECS, RunningSuite, embedded_settings, load_spec, running_suite
from tests.support.infra import PgDatabases, free_port

DATA = Path(__file__).resolve().parents[1] / "data"
GDMF_FEED = DATA / "feeds" / "gdmf_pmv_2026-08-22_sofa_cache.json"
HMAC_KEY = "test-hmac-key"
SECRET = "e2e-secret-0123456789abcdef-0123456789"


def ports() -> dict[str, int]:
    return {name: free_port() for name in SPECS}


def common_overrides() -> dict[str, dict[str, Any]]:
    return {
        "catalog": {"gdmf_url": GDMF_FEED.as_uri()},
        "device-channel": {"hmac_key": HMAC_KEY, "allow_unsigned": False},
    }


@asynccontextmanager
async def embedded_suite(tmp_path: Path, clock: Clock) -> AsyncIterator[RunningSuite]:
    settings = embedded_settings(tmp_path / "data", "127.0.0.1", ports(), common_overrides())
    async with running_suite(settings, shared_bus=InProcessBus(), clock=clock) as suite:
        yield suite


@asynccontextmanager
async def postgres_kafka_suite(
    pg: PgDatabases, bootstrap: str, clock: Clock
) -> AsyncIterator[RunningSuite]:
    overrides = common_overrides()
    settings = {}
    for name, port in ports().items():
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": port,
            "database_url": pg.create(f"mos_e2e_{name.replace('-', '_')}"),
            "bus": "kafka",
            "kafka_bootstrap_servers": bootstrap,
            "auto_migrate": True,
            "auth_secret": SECRET,
            **overrides.get(name, {}),
        }
        settings[name] = load_spec(name).settings_cls(**values)
    async with running_suite(settings, clock=clock) as suite:
        yield suite


def admin_headers(suite: RunningSuite) -> dict[str, str]:
    secret = suite.settings["catalog"].auth_secret.get_secret_value()
    return {"Authorization": f"Bearer {auth.issue_token(secret, auth.ALL_SCOPES)}"}


class FakeMac:
    """A Mac's DDM traffic as NanoMDM forwards it: X-Enrollment-ID, HMAC-signed bodies."""

    def __init__(self, client: httpx.AsyncClient, base: str, enrollment_id: str) -> None:
        self.client, self.base, self.enrollment_id = client, base, enrollment_id

    def _headers(self, body: bytes) -> dict[str, str]:
        sig = base64.b64encode(hmac.new(HMAC_KEY.encode(), body, hashlib.sha256).digest())
        return {"X-Enrollment-ID": self.enrollment_id, "X-Hmac-Signature": sig.decode()}

    def _check_signed(self, response: httpx.Response) -> None:
        expected = base64.b64encode(
            hmac.new(HMAC_KEY.encode(), response.content, hashlib.sha256).digest()
        ).decode()
        assert response.headers.get("X-Hmac-Signature") == expected

    async def get(self, path: str) -> httpx.Response:
        response = await self.client.get(f"{self.base}/ddm/{path}", headers=self._headers(b""))
        if response.status_code == 200:
            self._check_signed(response)
        return response

    async def report(self, items: dict[str, Any], full: bool = False) -> httpx.Response:
        body = json.dumps({"StatusItems": items, "Errors": [], "FullReport": full}).encode()
        return await self.client.put(
            f"{self.base}/ddm/status", content=body, headers=self._headers(body)
        )
