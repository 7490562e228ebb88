"""SIGTERM under load: `managed-os serve device-channel` on PostgreSQL + Kafka stops accepting,
finishes what it started, flushes its outbox and exits 0 — every acknowledged status report is
stored, and its event is on Kafka exactly once."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import signal
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import func, select

from device_channel.models import devices, outbox
from managed_os import auth
from managed_os.cloudevents import CloudEvent
from managed_os.db import make_engine
from managed_os.events import TOPIC_DEVICES, DeviceStatusReported
from tests.support.infra import free_port

SECRET = "sigterm-test-secret-0123456789abcdef"
HMAC_KEY = b"sigterm-hmac-key"
DEVICES = 40
GRACE = 30.0  # Kubernetes' default terminationGracePeriodSeconds
LOAD_BEFORE_SIGTERM = 200  # acknowledged reports, or 5 s of load, whichever comes first


@dataclass
class Load:
    """What the simulated Macs saw: acknowledged builds per Mac, every status, every error."""

    acked: dict[str, list[str]] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[tuple[float, str]] = field(default_factory=list)
    finished_after_sigterm: int = 0
    sigterm_at: float | None = None

    @property
    def total_acked(self) -> int:
        return sum(len(builds) for builds in self.acked.values())


def service_env(db_url: str, kafka: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOS_")}
    prefix = "MOS_DEVICE_CHANNEL_"
    env.update(
        {
            prefix + "DATABASE_URL": db_url,
            prefix + "BUS": "kafka",
            prefix + "KAFKA_BOOTSTRAP_SERVERS": kafka,
            prefix + "AUTH_SECRET": SECRET,
            prefix + "HMAC_KEY": HMAC_KEY.decode(),
            prefix + "PORT": str(port),
            prefix + "LOG_LEVEL": "WARNING",
        }
    )
    return env


def open_log(path: Path) -> IO[bytes]:
    return path.open("wb")


def status_report(build: str) -> bytes:
    items = {"device": {"operating-system": {"version": "26.4.1", "build-version": build}}}
    return json.dumps({"StatusItems": items, "Errors": [], "FullReport": False}).encode()


def signed(body: bytes, enrollment_id: str) -> dict[str, str]:
    sig = base64.b64encode(hmac.new(HMAC_KEY, body, hashlib.sha256).digest()).decode()
    return {"X-Enrollment-ID": enrollment_id, "X-Hmac-Signature": sig}


async def wait_ready(http: httpx.AsyncClient, base: str, proc: asyncio.subprocess.Process) -> None:
    async with asyncio.timeout(60):
        while True:
            assert proc.returncode is None, "the service exited during startup"
            try:
                if (await http.get(f"{base}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)


async def report_until_refused(http: httpx.AsyncClient, base: str, eid: str, load: Load) -> None:
    """One Mac: reports one after another (build 25E1, 25E2, …) until the server is gone."""
    builds = load.acked.setdefault(eid, [])
    for n in range(1, 100_000):
        build = f"25E{n}"
        body = status_report(build)
        sent_before_sigterm = load.sigterm_at is None
        try:
            response = await http.put(f"{base}/ddm/status", content=body, headers=signed(body, eid))
        except httpx.TransportError as exc:
            load.errors.append((time.monotonic(), f"{type(exc).__name__}: {exc}"))
            return
        load.statuses[response.status_code] += 1
        if not response.is_success:
            return
        builds.append(build)
        if sent_before_sigterm and load.sigterm_at is not None:
            load.finished_after_sigterm += 1


async def events_on_kafka(bootstrap: str, prefix: str) -> list[CloudEvent]:
    """Every DeviceStatusReported of our Macs on the devices topic, read from the beginning."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # fetches the metadata partitions_for_topic reads
        partitions = [
            TopicPartition(TOPIC_DEVICES, p)
            for p in sorted(consumer.partitions_for_topic(TOPIC_DEVICES) or ())
        ]
        assert partitions
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        events: list[CloudEvent] = []
        async with asyncio.timeout(20):
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                batches = await consumer.getmany(*partitions, timeout_ms=500)
                for records in batches.values():
                    for record in records:
                        event = CloudEvent.from_kafka(record.value, record.headers)
                        if event.type == DeviceStatusReported.TYPE and (
                            event.subject or ""
                        ).startswith(prefix):
                            events.append(event)
        return events
    finally:
        await consumer.stop()


async def test_sigterm_under_load_finishes_requests_flushes_the_outbox_and_exits_zero(
    pg, kafka, tmp_path
):
    db_url = pg.create("mos_sigterm")
    port = free_port()
    env = service_env(db_url, kafka, port)
    migrate = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "managed_os", "migrate", "device-channel", env=env
    )
    assert await asyncio.wait_for(migrate.wait(), 60) == 0

    log = open_log(tmp_path / "device-channel.log")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "managed_os", "serve", "device-channel", env=env, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    prefix = f"SIGTERM-{uuid.uuid4().hex[:8]}-"
    macs = [f"{prefix}{n:03d}" for n in range(DEVICES)]
    load = Load()
    limits = httpx.Limits(max_connections=DEVICES + 4)
    try:
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            await wait_ready(http, base, proc)
            token = auth.issue_token(SECRET, ["device-channel:write"], subject="sigterm-test")
            for eid in macs:
                registered = await http.post(
                    f"{base}/v1/devices",
                    json={"enrollment_id": eid},
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert registered.status_code == 201, registered.text

            async with asyncio.timeout(GRACE), asyncio.TaskGroup() as tasks:
                for eid in macs:
                    tasks.create_task(report_until_refused(http, base, eid, load))
                started = time.monotonic()
                while load.total_acked < LOAD_BEFORE_SIGTERM and time.monotonic() - started < 5:
                    await asyncio.sleep(0.02)
                load.sigterm_at = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                exit_code = await asyncio.wait_for(proc.wait(), GRACE)
                exited_after = time.monotonic() - load.sigterm_at

        # Refused once it is gone: a connection error, not an answer.
        async with httpx.AsyncClient(timeout=5) as fresh:
            with pytest.raises(httpx.ConnectError):
                await fresh.put(f"{base}/ddm/status", content=b"{}", headers=signed(b"{}", macs[0]))
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        log.close()

    assert exit_code == 0, (tmp_path / "device-channel.log").read_text()[-3000:]
    assert exited_after < GRACE
    assert set(load.statuses) == {200}, load.statuses  # no 5xx, nothing refused by the app
    assert load.total_acked >= DEVICES
    assert load.finished_after_sigterm > 0  # requests in flight at SIGTERM were answered
    assert len(load.errors) == DEVICES  # every Mac ended on a connection error …
    assert all(at >= load.sigterm_at for at, _ in load.errors), load.errors  # … after SIGTERM

    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(devices.c.enrollment_id, devices.c.facts).where(
                    devices.c.enrollment_id.in_(macs)
                )
            )
            stored = {r.enrollment_id: r.facts.get("build_version") for r in rows}
            backlog = await conn.scalar(select(func.count()).select_from(outbox))
    finally:
        await engine.dispose()
    last_acked = {eid: builds[-1] for eid, builds in load.acked.items() if builds}
    assert {eid: stored[eid] for eid in last_acked} == last_acked
    assert backlog == 0  # the outbox was flushed before exit

    events = await events_on_kafka(kafka, prefix)
    copies = Counter(e.id for e in events)
    assert max(copies.values()) == 1  # no event published twice
    on_kafka = Counter((e.data["enrollment_id"], e.data["facts"]["build_version"]) for e in events)
    acked = Counter((eid, b) for eid, builds in load.acked.items() for b in builds)
    assert on_kafka == acked  # every acknowledged report exactly once, nothing else
