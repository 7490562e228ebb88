"""Compliance over a real broker, through failures: 10,000 status events; the broker is frozen
mid-stream (SIGSTOP/SIGCONT: Tansu keeps its log in memory, so freezing is how an outage of a
durable broker is modelled), the consumer is killed (SIGKILL, mid-batch) and restarted, and a
second replica joins the group (a rebalance while events still arrive).
Afterwards every Mac's state and history are exactly what the events imply: none lost, none
applied twice, none out of order."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from compliance.rules import evaluate
from compliance.service import status_inputs
from managed_os.events import (
    TOPIC_DEVICES,
    TOPIC_POLICIES,
    DeviceStatusReported,
    PolicyPublished,
    SoftwareUpdateState,
    to_event,
)
from managed_os.policy import DeviceFacts, ExpectedEnforcement, PolicyItem
from tests.support.infra import free_port, tansu_process

EVENTS, MACS = 10_000, 400
STALE = timedelta(hours=72)
ITEM = PolicyItem(
    item_id="item-26", major=26, mode="minimum", installation_method="continuously_enforce"
)
PHASES = ["none", "downloading", "installing", "failed", "downloading", "prepared", "done"]


def stream(start: datetime) -> list[DeviceStatusReported]:
    """25 reports per Mac, interleaved across Macs, each a step of an update (some fail and
    retry); a Mac's state after its last report depends on every report before it."""
    out = []
    for n in range(EVENTS):
        mac, step = n % MACS, n // MACS
        phase = PHASES[(step + mac) % len(PHASES)]
        eid = f"MAC-{mac:04d}"
        out.append(
            DeviceStatusReported(
                enrollment_id=eid,
                blueprint_id="bp-1",
                reported_at=start + timedelta(seconds=n),
                full_report=False,
                facts=DeviceFacts(
                    enrollment_id=eid,
                    os_version="26.6.2" if phase == "done" else "26.4.1",
                    device_id="J313AP",
                ),
                softwareupdate=SoftwareUpdateState(
                    install_state="none" if phase == "done" else phase,
                    failure_count=1 if phase == "failed" else 0,
                    failure_reason="Not enough free disk space" if phase == "failed" else None,
                ),
                declarations=[],
                expected=[
                    ExpectedEnforcement(
                        item_id="item-26",
                        declaration_id="managed-os.item-26.u.aaaaaaaaaaaa",
                        kind="update",
                        target_version="26.6.2",
                        deadline="2031-01-01T09:00:00",  # far away: states don't depend on time
                    )
                ],
            )
        )
    return out


def expected_histories(events: list[DeviceStatusReported], now: datetime) -> dict[str, list[str]]:
    """Each Mac's sequence of overall states, folding its events in order through the rules."""
    histories: dict[str, list[str]] = {}
    for e in events:  # one Mac's reports are in time order, each replacing its inputs
        state = evaluate(status_inputs(e, None), [ITEM], now, STALE).overall.state
        seen = histories.setdefault(e.enrollment_id, [])
        if not seen or seen[-1] != state:
            seen.append(state)
    return histories


async def produce(bootstrap: str, events: list[DeviceStatusReported], now: datetime) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, request_timeout_ms=60000
    )
    await producer.start()
    try:
        policy = PolicyPublished(
            blueprint_id="bp-1", revision=1, token="t1", candidates=[], items=[ITEM]
        )
        key, value, headers = to_event(policy, source="/t", subject="bp-1", time=now).to_kafka()
        await producer.send_and_wait(TOPIC_POLICIES, value=value, key=key, headers=headers)
        futures = []
        for i, p in enumerate(events):
            event = to_event(p, source="/t", subject=p.enrollment_id, time=now)
            key, value, headers = event.to_kafka()
            futures.append(
                await producer.send(TOPIC_DEVICES, value=value, key=key, headers=headers)
            )
            if i % 500 == 499:
                await asyncio.gather(*futures)  # a steady stream, not one burst
                futures = []
                await asyncio.sleep(0.05)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def serve(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "managed_os", "serve", "compliance"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def count(conn: asyncpg.Connection, table: str) -> int:
    return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_every_state_is_exact_after_a_broker_outage_and_a_consumer_crash(pg):
    now = datetime.now(UTC).replace(microsecond=0)
    events = stream(now - timedelta(hours=4))
    url = pg.create("mos_reliability")
    raw_url = url.replace("postgresql+asyncpg://", "postgresql://")
    with tansu_process() as (bootstrap, broker):
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        await admin.create_topics([NewTopic(TOPIC_DEVICES, 3, 1), NewTopic(TOPIC_POLICIES, 3, 1)])
        await admin.close()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MOS_")}
        env.update(
            MOS_COMPLIANCE_DATABASE_URL=url,
            MOS_COMPLIANCE_AUTO_MIGRATE="true",
            MOS_COMPLIANCE_BUS="kafka",
            MOS_COMPLIANCE_KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            MOS_COMPLIANCE_AUTH_SECRET="reliability-secret-0123456789abcdef01",
            MOS_COMPLIANCE_PORT=str(free_port()),
            MOS_COMPLIANCE_CONSUMER_BATCH_SIZE="250",
            MOS_COMPLIANCE_LOG_LEVEL="WARNING",
        )
        consumer = serve(env)
        second: subprocess.Popen[bytes] | None = None
        producing = asyncio.create_task(produce(bootstrap, events, now))
        conn: asyncpg.Connection | None = None
        try:

            async def ready() -> bool:
                nonlocal conn
                try:
                    conn = conn or await asyncpg.connect(raw_url)
                    return await count(conn, "processed_events") >= 1500
                except (asyncpg.UndefinedTableError, OSError):
                    return False

            await wait_until(ready, 120)
            assert conn is not None
            # 1. The broker stops answering for 4 s in the middle of the stream.
            broker.send_signal(signal.SIGSTOP)
            await asyncio.sleep(4)
            broker.send_signal(signal.SIGCONT)

            async def applied(n: int) -> bool:
                assert conn is not None
                return await count(conn, "processed_events") >= n

            await wait_until(lambda: applied(5000), 120)
            # 2. The consumer dies mid-stream (no graceful stop), then comes back.
            consumer.kill()
            consumer.wait(10)
            consumer = serve(env)
            # 3. A second replica joins the group: the partitions are rebalanced between the
            # two while events are still arriving (scale-out by partitions).
            second = serve({**env, "MOS_COMPLIANCE_PORT": str(free_port())})
            await producing
            await wait_until(lambda: applied(EVENTS + 1), 180)
            await asyncio.sleep(1)  # anything left would show up as an extra row now

            assert await count(conn, "processed_events") == EVENTS + 1  # every event, once
            expected = expected_histories(events, now)
            rows = await conn.fetch("SELECT enrollment_id, state, last_report_at FROM devices")
            assert len(rows) == MACS
            last_report = {e.enrollment_id: e.reported_at for e in events}
            for row in rows:
                eid = row["enrollment_id"]
                assert row["state"] == expected[eid][-1], eid
                assert row["last_report_at"] == last_report[eid], eid
            history = await conn.fetch(
                "SELECT enrollment_id, state FROM state_changes WHERE item_id = '' ORDER BY id"
            )
            got: dict[str, list[str]] = {}
            for h in history:
                got.setdefault(h["enrollment_id"], []).append(h["state"])
            assert got == expected  # no change lost, repeated or reordered
        finally:
            producing.cancel()
            for proc in (consumer, second):
                if proc is not None:
                    proc.kill()
                    proc.wait(10)
            if conn is not None:
                await conn.close()
