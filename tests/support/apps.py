"""One service at a time behind Starlette's TestClient (its lifespan runs for real)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from managed_os import auth
from managed_os.app import create_app
from managed_os.clock import Clock
from managed_os.suite import load_spec

SECRET = "unit-test-secret-0123456789abcdef0123"


@contextmanager
def service_client(
    name: str, tmp_path: Path, clock: Clock | None = None, **overrides: Any
) -> Iterator[TestClient]:
    spec = load_spec(name)
    values: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / (name + '.db')}",
        "auto_migrate": True,
        "auth_secret": SECRET,
        "max_body_bytes": 4096,
        **overrides,
    }
    if name == "catalog":
        values.setdefault("sync_on_start", False)
    settings = spec.settings_cls(**values)
    with TestClient(create_app(spec, settings, clock=clock), raise_server_exceptions=False) as c:
        yield c


def bearer(*scopes: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {auth.issue_token(SECRET, scopes)}"}
