"""The device channel's sync cache and status group commit: the race guard, bounds, local
invalidation by the service's own writes, and answers identical to the uncached ones."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from sqlalchemy.exc import IntegrityError

from device_channel.service import on_policy
from device_channel.status_writer import Item, StatusWriter
from device_channel.sync_cache import RECORDS, DeviceSnapshot, SyncCache
from managed_os import ddm
from managed_os.policy import Applicability, Candidate, DeviceFacts, Policy
from tests.support.apps import bearer, service_client

NOW = datetime(2026, 8, 25, 12, tzinfo=UTC)
KEY = b"sync-cache-hmac-key"


def snap(eid: str = "MAC-1", version: str | None = None) -> DeviceSnapshot:
    return DeviceSnapshot("bp", DeviceFacts(enrollment_id=eid, os_version=version), NOW)


def enabled(size: int = 10) -> SyncCache:
    cache = SyncCache(size)
    cache.enable()
    return cache


def test_a_read_that_began_before_an_invalidation_is_not_stored():
    cache = enabled()
    epoch = cache.epoch()  # the reader takes the epoch, then reads the old row ...
    cache.invalidate([("device", "MAC-1")])  # ... a writer commits meanwhile
    assert not cache.put_device("MAC-1", snap(version="26.5"), epoch)
    assert cache.device("MAC-1") is None
    # A read that began after the invalidation is stored; other keys were never affected.
    assert cache.put_device("MAC-1", snap(version="26.6"), cache.epoch())
    assert cache.put_device("MAC-2", snap("MAC-2"), epoch)


def test_an_invalidation_drops_the_entry_and_a_policy_key_only_its_policy():
    cache = enabled()
    policy = Policy(blueprint_id="bp", revision=1, token="t", candidates=[])
    cache.put_device("MAC-1", snap(), cache.epoch())
    cache.put_policy("bp", policy, cache.epoch())
    cache.invalidate([("policy", "bp")])
    assert cache.policy("bp") is None and cache.device("MAC-1") is not None
    cache.invalidate([("device", "MAC-1")])
    assert cache.device("MAC-1") is None


def test_forgotten_invalidation_records_still_refuse_older_reads():
    cache = enabled()
    epoch = cache.epoch()
    cache.invalidate([("device", "MAC-1")])
    cache.invalidate([("device", f"OTHER-{n}") for n in range(RECORDS + 1)])
    assert not cache.put_device("MAC-1", snap(), epoch)  # its record is gone, the floor is not
    assert cache.put_device("MAC-1", snap(), cache.epoch())


def test_clearing_or_disabling_refuses_every_read_that_began_before():
    cache = enabled()
    epoch = cache.epoch()
    cache.clear()
    assert not cache.put_device("MAC-1", snap(), epoch)
    cache.disable()
    assert not cache.put_device("MAC-1", snap(), cache.epoch())
    assert SyncCache(0).put_device("MAC-1", snap(), 0) is False  # size 0: never enabled


def test_the_cache_keeps_the_most_recently_used_devices():
    cache = enabled(size=2)
    for eid in ("A", "B"):
        cache.put_device(eid, snap(eid), cache.epoch())
    cache.device("A")
    cache.put_device("C", snap("C"), cache.epoch())
    assert "A" in cache and "C" in cache and "B" not in cache


async def test_concurrent_reports_share_a_transaction_and_a_failed_one_fails_alone():
    batches: list[list[str]] = []

    async def apply(items: Sequence[Item]) -> None:
        await asyncio.sleep(0.01)
        if "BAD" in [eid for eid, _ in items]:
            raise RuntimeError("conflict")
        batches.append([eid for eid, _ in items])

    writer = StatusWriter(apply, batch_size=4)
    report = ddm.parse_status_report(b'{"StatusItems": {}}')
    results = await asyncio.gather(
        *(writer.write(eid, report) for eid in ["A", "B", "BAD", "C", "D", "E"]),
        return_exceptions=True,
    )
    assert [type(r).__name__ for r in results] == ["NoneType"] * 2 + ["RuntimeError"] + [
        "NoneType"
    ] * 3
    assert batches[0] == ["A"]  # the first starts a transaction; the rest wait for the next
    assert sorted(eid for batch in batches for eid in batch) == ["A", "B", "C", "D", "E"]
    assert writer.reports == 5
    # A report queued just as the writer finishes is not left behind.
    await writer.write("F", report)
    await asyncio.wait_for(writer.write("G", report), 5)


async def test_what_the_unlocked_path_stored_is_answered_and_never_applied_again():
    locked: list[list[str]] = []
    offered: list[list[str]] = []

    async def apply(items: Sequence[Item]) -> None:
        locked.append([eid for eid, _ in items])

    async def unlocked(items: Sequence[Item]) -> set[str]:
        ids = [eid for eid, _ in items]
        offered.append(ids)
        if "DOWN" in ids:
            raise ConnectionError("nothing stored")
        return {eid for eid in ids if not eid.startswith("NEW")}  # first contacts are left

    writer = StatusWriter(apply, unlocked=unlocked, batch_size=8)
    report = ddm.parse_status_report(b'{"StatusItems": {}}')
    await asyncio.gather(*(writer.write(eid, report) for eid in ["A", "NEW-1", "B", "A"]))
    assert sorted(eid for batch in offered for eid in batch) == ["A", "A", "B", "NEW-1"]
    assert sorted(eid for batch in locked for eid in batch) == ["NEW-1"]
    assert writer.reports == 4
    locked.clear()
    await writer.write("DOWN", report)  # the unlocked path failed: the locked one stores it
    assert locked == [["DOWN"]]


def sign(body: bytes) -> str:
    return base64.b64encode(hmac.new(KEY, body, hashlib.sha256).digest()).decode()


def get(client, path: str, eid: str = "MAC-1"):
    return client.get(path, headers={"X-Enrollment-ID": eid, "X-Hmac-Signature": sign(b"")})


def put_status(client, version: str, eid: str = "MAC-1"):
    items = {"device": {"operating-system": {"version": version, "build-version": "25E253"}}}
    body = json.dumps({"StatusItems": items, "Errors": [], "FullReport": True}).encode()
    return client.put(
        "/ddm/status",
        content=body,
        headers={"X-Enrollment-ID": eid, "X-Hmac-Signature": sign(body)},
    )


def install(client, revision: int, below: str) -> None:
    ctx = client.app.state.ctx
    enforce = ddm.softwareupdate_enforcement(f"cfg-{below}", below, datetime(2026, 9, 1, 17))
    subs = ddm.status_subscriptions("subs", ["device.operating-system.version"])
    policy = Policy(
        blueprint_id="bp",
        revision=revision,
        token=f"t{revision}",
        candidates=[
            Candidate(declaration=subs.to_json(), applies=Applicability(always=True)),
            Candidate(
                declaration=enforce.to_json(),
                applies=Applicability(majors=[26], version_below=below),
            ),
        ],
    )

    async def put() -> None:
        async with ctx.uow() as uow:
            await on_policy(uow, policy, ctx.clock.now())
            await uow.commit()

    client.portal.call(put)


def stored_token(client, eid: str = "MAC-1") -> str:
    device = client.get(f"/v1/devices/{eid}", headers=bearer("device-channel:read")).json()
    return str(device["device"]["declarations_token"])


@pytest.fixture(params=[100, 0], ids=["cached", "uncached"])
def client(request, tmp_path):
    with service_client(
        "device-channel", tmp_path, hmac_key=KEY.decode(), sync_cache_size=request.param
    ) as c:
        c.post(
            "/v1/devices",
            json={"enrollment_id": "MAC-1", "blueprint_id": "bp"},
            headers=bearer("device-channel:write"),
        )
        install(c, 1, "26.6")
        yield c


def test_the_next_sync_after_a_status_report_or_a_new_policy_has_the_new_token(client):
    put_status(client, "26.4.1")
    first = get(client, "/ddm/tokens").json()["SyncTokens"]["DeclarationsToken"]
    assert get(client, "/ddm/tokens").json()["SyncTokens"]["DeclarationsToken"] == first
    assert first == stored_token(client)
    put_status(client, "26.6")  # now up to date: the enforcement leaves the manifest
    second = get(client, "/ddm/tokens").json()["SyncTokens"]["DeclarationsToken"]
    assert second != first and second == stored_token(client)
    install(client, 2, "26.7")  # a newer minimum: the enforcement comes back
    third = get(client, "/ddm/tokens").json()["SyncTokens"]["DeclarationsToken"]
    assert third not in (first, second) and third == stored_token(client)
    items = get(client, "/ddm/declaration-items").json()
    assert items["DeclarationsToken"] == third
    assert [c["Identifier"] for c in items["Declarations"]["Configurations"]] == [
        "cfg-26.7",
        "subs",
    ]


def test_cached_answers_are_the_bytes_and_signature_the_database_gives(tmp_path, client):
    put_status(client, "26.4.1")
    cached = [get(client, p) for p in ("/ddm/tokens", "/ddm/declaration-items")] * 2
    with service_client(
        "device-channel",
        tmp_path / "uncached",
        hmac_key=KEY.decode(),
        sync_cache_size=0,
        database_url=str(client.app.state.ctx.settings.database_url),
    ) as uncached:
        fresh = [get(uncached, p) for p in ("/ddm/tokens", "/ddm/declaration-items")] * 2
    for a, b in zip(cached, fresh, strict=True):
        assert a.status_code == b.status_code == 200
        assert a.content == b.content
        assert a.headers["x-hmac-signature"] == b.headers["x-hmac-signature"] == sign(a.content)
        assert a.headers["content-type"] == b.headers["content-type"] == "application/json"


def test_unsigned_or_malformed_sync_requests_are_refused_with_or_without_the_cache(client):
    get(client, "/ddm/tokens")  # cached now, when the cache is on
    assert client.get("/ddm/tokens", headers={"X-Enrollment-ID": "MAC-1"}).status_code == 401
    wrong = {"X-Enrollment-ID": "MAC-1", "X-Hmac-Signature": sign(b"x")}
    assert client.get("/ddm/declaration-items", headers=wrong).status_code == 401
    assert client.get("/ddm/tokens", headers={"X-Hmac-Signature": sign(b"")}).status_code == 422
    assert get(client, "/ddm/tokens", eid="M" * 201).status_code == 422
    user = client.get(
        "/ddm/declaration-items",
        headers={
            "X-Enrollment-ID": "MAC-1",
            "X-Enrollment-Type": "USER",
            "X-Hmac-Signature": sign(b""),
        },
    ).json()
    assert user["Declarations"]["Configurations"] == []


def test_status_reports_answered_before_routing_keep_the_routes_answers(client):
    """The status fast path answers what it can; everything else gets the route's answer."""
    assert put_status(client, "26.4.1").status_code == 200
    assert (
        client.get("/v1/devices/MAC-1", headers=bearer("device-channel:read")).json()["device"][
            "facts"
        ]["os_version"]
        == "26.4.1"
    )
    body = b'{"StatusItems": {"device": 1}}'
    signed = {"X-Enrollment-ID": "MAC-1", "X-Hmac-Signature": sign(body)}
    assert client.put("/ddm/status", content=body, headers=signed).status_code == 400
    assert client.put("/ddm/status", content=b"{", headers=signed).status_code == 401  # signed {
    unsigned = {"X-Enrollment-ID": "MAC-1"}
    assert client.put("/ddm/status", content=body, headers=unsigned).status_code == 401
    nobody = {"X-Hmac-Signature": sign(body)}
    assert client.put("/ddm/status", content=body, headers=nobody).status_code == 422
    # A write that fails gets the app's handler's answer (a conflict: 409), signed.
    state = client.app.state.ctx.state
    writer = state.status_writer

    async def conflict(_items) -> None:
        raise IntegrityError("insert", {}, Exception("duplicate key"))

    real, writer.apply = writer.apply, conflict
    try:
        response = put_status(client, "26.5")
    finally:
        writer.apply = real
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "conflict"
    assert response.headers["x-hmac-signature"] == sign(response.content)
    metrics = client.get("/metrics").text
    assert 'route="/ddm/status",service="device-channel",status="409"' in metrics
