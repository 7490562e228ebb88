"""What every service promises over HTTP: auth scopes, one error shape, body limits,
probes, metrics and a complete OpenAPI description."""

from __future__ import annotations

import pytest
from fastapi.routing import APIRoute

from managed_os import auth
from managed_os.suite import SPECS
from tests.support.apps import SECRET, bearer, service_client


@pytest.mark.parametrize("name", list(SPECS))
def test_every_service_answers_health_readiness_and_metrics(name, tmp_path):
    extra = {"allow_unsigned": True} if name == "device-channel" else {}
    with service_client(name, tmp_path, **extra) as client:
        assert client.get("/healthz").json() == {"status": "ok", "service": name}
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"database": True, "bus": True}
        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        assert "mos_http_requests_total" in metrics.text
        assert 'route="/healthz"' in metrics.text


@pytest.mark.parametrize("name", list(SPECS))
def test_openapi_describes_every_route(name, tmp_path):
    extra = {"allow_unsigned": True} if name == "device-channel" else {}
    with service_client(name, tmp_path, **extra) as client:
        paths = client.get("/openapi.json").json()["paths"]
        routes = [r for r in client.app.routes if isinstance(r, APIRoute)]
        assert routes
        for route in routes:
            assert route.path in paths, route.path
            for method in route.methods:
                assert method.lower() in paths[route.path], (method, route.path)


def test_a_request_without_a_token_gets_401_in_the_common_error_shape(tmp_path):
    with service_client("catalog", tmp_path) as client:
        response = client.get("/v1/releases")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"error": {"code": "unauthorized", "message": "missing bearer token"}}


def test_a_forged_or_expired_token_gets_401(tmp_path):
    from datetime import UTC, datetime, timedelta

    forged = auth.issue_token("another-secret-0123456789abcdef0123", ["catalog:read"])
    expired = auth.issue_token(
        SECRET,
        ["catalog:read"],
        ttl=timedelta(minutes=1),
        now=datetime.now(UTC) - timedelta(hours=1),
    )
    with service_client("catalog", tmp_path) as client:
        for token in (forged, expired, "not-a-jwt"):
            r = client.get("/v1/releases", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401
            assert r.json()["error"]["code"] == "unauthorized"


def test_a_token_without_the_right_scope_gets_403_naming_the_scope(tmp_path):
    with service_client("catalog", tmp_path) as client:
        other_service = client.get("/v1/releases", headers=bearer("compliance:read"))
        read_only = client.post("/v1/sync", headers=bearer("catalog:read"))
        allowed = client.get("/v1/releases", headers=bearer("catalog:read"))
        write_implies_read = client.get("/v1/releases", headers=bearer("catalog:write"))
    assert other_service.status_code == 403
    assert other_service.json()["error"]["details"] == {"required": "catalog:read"}
    assert read_only.status_code == 403
    assert "catalog:write" in read_only.json()["error"]["message"]
    assert allowed.status_code == 200
    assert write_implies_read.status_code == 200


def test_malformed_json_is_a_400_and_a_schema_violation_a_422(tmp_path):
    headers = {**bearer("declarations:write"), "content-type": "application/json"}
    with service_client("declarations", tmp_path) as client:
        broken = client.post("/v1/blueprints", content=b'{"name": ', headers=headers)
        unknown = client.post(
            "/v1/blueprints", json={"name": "x", "colour": "red"}, headers=headers
        )
        empty = client.post("/v1/blueprints", json={"name": ""}, headers=headers)
    assert broken.status_code == 400
    assert broken.json()["error"]["message"] == "request body is not valid JSON"
    assert unknown.status_code == 422
    assert unknown.json()["error"]["details"][0]["loc"] == ["body", "colour"]
    assert empty.status_code == 422


def test_an_oversized_body_is_refused_with_413_declared_or_streamed(tmp_path):
    headers = {**bearer("declarations:write"), "content-type": "application/json"}
    big = b'{"name": "' + b"x" * 10_000 + b'"}'
    with service_client("declarations", tmp_path) as client:
        declared = client.post("/v1/blueprints", content=big, headers=headers)
        streamed = client.post(
            "/v1/blueprints",
            content=(big[i : i + 1000] for i in range(0, len(big), 1000)),
            headers=headers,
        )
        small = client.post("/v1/blueprints", json={"name": "fits"}, headers=headers)
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
    assert small.status_code == 201


def test_an_unknown_route_is_a_404_in_the_common_shape(tmp_path):
    with service_client("compliance", tmp_path) as client:
        response = client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_settings_refuse_a_weak_auth_secret_and_an_unknown_database_scheme():
    from pydantic import ValidationError

    from catalog.settings import CatalogSettings

    with pytest.raises(ValidationError, match="at least 32 characters"):
        CatalogSettings(auth_secret="short")
    with pytest.raises(ValidationError, match="postgresql"):
        CatalogSettings(database_url="mysql://x")


def test_the_device_channel_refuses_to_serve_unsigned_outside_the_embedded_mode():
    from device_channel.main import SPEC
    from device_channel.settings import DeviceChannelSettings
    from managed_os.app import create_app
    from managed_os.settings import ConfigurationError

    with pytest.raises(ConfigurationError, match="HMAC_KEY is required"):
        create_app(SPEC, DeviceChannelSettings())
    assert create_app(SPEC, DeviceChannelSettings(allow_unsigned=True)) is not None
    assert create_app(SPEC, DeviceChannelSettings(hmac_key="k")) is not None
