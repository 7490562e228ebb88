"""Compliance: consumer throughput from Kafka (Tansu) into PostgreSQL, and summary query
time over a large fleet.

1. Consumer, for two streams of EVENTS `DeviceStatusReported` events for DEVICES Macs:
   "updates" (every Mac walks through an update, so most events change a state and write
   history and an outbox event) and "steady" (a fleet up to date reporting, no state
   changes after each Mac's first report); BENCH_STREAM=updates|steady measures one. The
   events are produced to the devices topic of a fresh broker per stream first; then the
   compliance service as served (`managed-os serve compliance`, BENCH_REPLICAS processes,
   default 2 as production's minimum; each runs its MOS_COMPLIANCE_CONSUMER_MEMBERS group
   members, or BENCH_MEMBERS) drains them into a fresh PostgreSQL database through the
   real batched handler (inbox, state rules, history, outbox and relay, offsets committed
   after the commit). The topics have production's 12 partitions. Printed: events/s from
   the group's forming (all members joined, a batch committed) to the last event
   committed and its `DeviceComplianceChanged` events relayed out of the outbox (progress
   is read from the group's committed offsets, which costs the machine almost nothing,
   then the outbox's row count; every event is then checked to be in the inbox once),
   against a bare aiokafka consumer reading the same events in the same run (the broker's
   ceiling here); also the rate to the last event committed alone, and the outbox events
   still to relay then. Target: ≥ 20,000 events/s.
2. Summary: FLEET Macs (and their item rows) inserted straight into the tables, then
   `GET /v1/summary` for the fleet, one blueprint and one item, timed over repeated calls
   (in-process ASGI: the query and the JSON, no network). Target: ≤ 50 ms.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition
from sqlalchemy import func, insert, select

from bench.support import Server, cpu_seconds, cpu_used, fresh_database, postgres_pids, start, stop
from compliance import models
from compliance.main import SPEC
from compliance.repository import ComplianceStore
from compliance.settings import ComplianceSettings
from managed_os import auth
from managed_os.app import create_app
from managed_os.clock import FixedClock
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

EVENTS = int(os.environ.get("BENCH_EVENTS", "100000"))
DEVICES = int(os.environ.get("BENCH_EVENT_DEVICES", "20000"))
FLEET = int(os.environ.get("BENCH_FLEET", "100000"))
PARTITIONS = 12
# Group members per process (default: the service's own setting) and processes.
MEMBERS = int(os.environ.get("BENCH_MEMBERS", "0"))
REPLICAS = int(os.environ.get("BENCH_REPLICAS", "2"))
SECRET = "bench-secret-0123456789abcdef0123456789"
# The served processes judge on the real clock: reports from the last hour, a deadline five
# days ahead (device-local, as DDM writes it).
NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
DEADLINE = (NOW + timedelta(days=5)).strftime("%Y-%m-%dT%H:%M:%S")
BLUEPRINTS = [f"bp-{n:02d}" for n in range(20)]
ITEM = PolicyItem(
    item_id="item-26", major=26, mode="rolling", installation_method="continuously_enforce"
)
STATES = ["pending", "in_progress", "up_to_date", "failed", "overdue"]


# The phases each Mac's reports walk through, per stream. "updates": an update as a real
# one goes, enforced → downloading → prepared → installing → on the new version (a few fail
# instead), so most events change a state and write history and an outbox event. "steady":
# a fleet already up to date reporting (no state changes after each Mac's first report), the
# common case between releases. Both are measured unless BENCH_STREAM names one.
STREAMS = {
    "updates": ["none", "downloading", "prepared", "installing", "done"],
    "steady": ["done"],
}


def _report(n: int, rng: random.Random, phases: list[str]) -> DeviceStatusReported:
    eid = f"MAC-{n % DEVICES:06d}"
    step = n // DEVICES
    phase = phases[step % len(phases)]
    failed = phase == "installing" and rng.random() < 0.05
    version = "26.6.2" if phase == "done" else "26.4.1"
    return DeviceStatusReported(
        enrollment_id=eid,
        blueprint_id=BLUEPRINTS[n % len(BLUEPRINTS)],
        reported_at=NOW + timedelta(minutes=step),
        full_report=step == 0,
        facts=DeviceFacts(
            enrollment_id=eid,
            os_version=version,
            build_version="25G200" if version == "26.6.2" else "25E253",
            device_id="J313AP",
            model_identifier="Mac14,2",
        ),
        softwareupdate=SoftwareUpdateState(
            install_state="failed" if failed else ("none" if phase == "done" else phase),
            pending_version=None if phase in ("none", "done") else "26.6.2",
            failure_count=1 if failed else 0,
            failure_reason="Not enough free disk space" if failed else None,
        ),
        declarations=[],
        expected=[
            ExpectedEnforcement(
                item_id="item-26",
                declaration_id="managed-os.item-26.u.aaaaaaaaaaaa",
                kind="update",
                target_version="26.6.2",
                deadline=DEADLINE,
            )
        ],
    )


async def produce(bootstrap: str, phases: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    # As many partitions as production declares (deploy/k8s/base/kafka-topics.yaml).
    await admin.create_topics(
        [NewTopic(TOPIC_DEVICES, PARTITIONS, 1), NewTopic(TOPIC_POLICIES, PARTITIONS, 1)]
    )
    await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=1 << 20
    )
    await producer.start()
    rng = random.Random(7)
    try:
        for bp in BLUEPRINTS:
            policy = PolicyPublished(
                blueprint_id=bp, revision=1, token="t", candidates=[], items=[ITEM]
            )
            key, value, headers = to_event(policy, source="/b", subject=bp, time=NOW).to_kafka()
            await producer.send(TOPIC_POLICIES, value=value, key=key, headers=headers)
        pending = []
        for n in range(EVENTS):
            p = _report(n, rng, phases)
            event = to_event(p, source="/bench", subject=p.enrollment_id, time=NOW)
            key, value, headers = event.to_kafka()
            pending.append(
                await producer.send(TOPIC_DEVICES, value=value, key=key, headers=headers)
            )
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def bare_consume(bootstrap: str) -> float:
    """Events/s of an aiokafka consumer that only reads the devices topic."""
    consumer = AIOKafkaConsumer(
        TOPIC_DEVICES,
        bootstrap_servers=bootstrap,
        group_id="bench-bare",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen, started = 0, time.perf_counter()
    try:
        while seen < EVENTS:
            batches = await consumer.getmany(timeout_ms=1000, max_records=2000)
            seen += sum(len(r) for r in batches.values())
        return seen / (time.perf_counter() - started)
    finally:
        await consumer.stop()


async def group_formed(admin: AIOKafkaAdminClient, members: int) -> bool:
    """The service's consumer group is stable with `members` members."""
    for response in await admin.describe_consumer_groups([f"{SPEC.name}.events"]):
        for group in response.groups:
            state, joined = group[2], group[5]
            return bool(state == "Stable" and len(joined) == members)
    return False


async def committed(admin: AIOKafkaAdminClient) -> int:
    """Events the service's group has committed (applied), over every partition."""
    partitions = [
        TopicPartition(topic, n)
        for topic in (TOPIC_DEVICES, TOPIC_POLICIES)
        for n in range(PARTITIONS)
    ]
    offsets = await admin.list_consumer_group_offsets(f"{SPEC.name}.events", partitions=partitions)
    return sum(max(o.offset, 0) for o in offsets.values())


@dataclass
class Consumed:
    rate: float  # events/s over the counted window (consumed, and their outbox relayed)
    consumed_only: float  # events/s to the last event committed, the outbox not yet relayed
    backlog: int  # outbox events not yet relayed when the last event was committed
    cold: float  # events/s from the processes' start
    macs: int
    cpu: dict[str, float]  # CPU µs per event over the counted window, per party


async def service_consume(bootstrap: str, broker_pid: int) -> Consumed:
    """Events/s of the compliance service as served (`managed-os serve compliance`, REPLICAS
    processes in one consumer group, as production runs at least two) into PostgreSQL.
    Counted from the moment the group has formed with all its members and a batch has
    committed (process start-up and the group's forming are left out) to the last event
    applied and the outbox relayed; also returned: the rate to the last event applied, the
    outbox backlog then, the rate counted from the processes' start, and the CPU each party
    used per event over the counted window (served processes, PostgreSQL, broker)."""
    async with fresh_database(SPEC) as engine:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MOS_")}
        env.update(
            MOS_COMPLIANCE_DATABASE_URL=engine.url.render_as_string(hide_password=False),
            MOS_COMPLIANCE_AUTO_MIGRATE="false",
            MOS_COMPLIANCE_BUS="kafka",
            MOS_COMPLIANCE_KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            MOS_COMPLIANCE_AUTH_SECRET=SECRET,
            MOS_COMPLIANCE_SWEEP_INTERVAL_SECONDS="3600",
            MOS_COMPLIANCE_SNAPSHOT_INTERVAL_SECONDS="3600",
            MOS_COMPLIANCE_METRICS_INTERVAL_SECONDS="3600",
            MOS_COMPLIANCE_LOG_LEVEL="WARNING",
        )
        if MEMBERS:
            env["MOS_COMPLIANCE_CONSUMER_MEMBERS"] = str(MEMBERS)
        argv = [sys.executable, "-m", "managed_os", "serve", "compliance"]
        target = EVENTS + len(BLUEPRINTS)
        started = time.perf_counter()
        replicas: list[Server] = []
        try:
            # Started together, so their members join the group in one round.
            ports = [free_port() for _ in range(REPLICAS)]
            replicas += await asyncio.gather(
                *(
                    start(f"compliance-{n}", port, argv, {**env, "MOS_COMPLIANCE_PORT": str(port)})
                    for n, port in enumerate(ports)
                )
            )
            # Counted once the group has formed with every member and a batch has committed:
            # a member joining late rebalances the group (a pause of a few seconds) that a
            # running service does not see.
            members = REPLICAS * (MEMBERS or ComplianceSettings().consumer_members)
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
            await admin.start()
            first: tuple[float, int] | None = None
            served = [r.proc.pid for r in replicas]

            def cpu() -> dict[str, dict[int, float]]:
                return {
                    "served": cpu_seconds(served),
                    "PostgreSQL": cpu_seconds(postgres_pids()),
                    "broker": cpu_seconds([broker_pid]),
                }

            cpu_first: dict[str, dict[int, float]] = {}
            try:
                while True:
                    # Progress is the group's committed offsets (committed after each
                    # batch's database commit): asking the broker costs the machine almost
                    # nothing, where counting the inbox table 20 times a second took a
                    # share of PostgreSQL's CPU from the service being measured.
                    done = await committed(admin)
                    now = time.perf_counter()
                    if first is None and done > 0 and await group_formed(admin, members):
                        first = (now, done)
                        cpu_first = cpu()
                    if done >= target:
                        break
                    await asyncio.sleep(0.05)
            finally:
                await admin.close()
            # The window closes once the state changes' events have left the outbox too: a
            # relay that fell behind would leave work (and CPU) outside it, a rate the
            # service could not keep up.
            consumed_at = now
            backlog = await outbox_rows(engine)
            # Then only whether a row is left, read at the primary key's start: a count 20
            # times a second would read every row, dead ones included, on the service's time.
            while backlog and await outbox_oldest(engine) is not None:
                if time.perf_counter() - consumed_at > 120:
                    raise SystemExit("outbox events still unrelayed 120 s after the last")
                await asyncio.sleep(0.05)
            now = time.perf_counter()
            cpu_last = cpu()
            if first is None or first[1] > target // 2:
                raise SystemExit("the consumer group did not form before half the events")
            async with engine.connect() as conn:
                macs = (
                    await conn.execute(select(func.count()).select_from(models.devices))
                ).scalar_one()
                applied = (
                    await conn.execute(select(func.count()).select_from(models.processed_events))
                ).scalar_one()
            if applied != target:
                raise SystemExit(f"{applied:,} events in the inbox after {target:,} committed")
        finally:
            for server in replicas:
                await stop(server)
        counted = target - first[1]  # `first` is set: see above
        rate = counted / max(now - first[0], 1e-9)
        consumed_only = counted / max(consumed_at - first[0], 1e-9)
        per_event = {
            party: cpu_used(cpu_first[party], cpu_last[party]) / counted * 1e6 for party in cpu_last
        }
        return Consumed(rate, consumed_only, backlog, target / (now - started), macs, per_event)


async def outbox_oldest(engine: Any) -> int | None:
    async with engine.connect() as conn:
        query = select(models.outbox.c.id).order_by(models.outbox.c.id).limit(1)
        return (await conn.execute(query)).scalar()


async def outbox_rows(engine: Any) -> int:
    async with engine.connect() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(models.outbox))).scalar_one()
        )


async def summary_times() -> dict[str, tuple[float, float]]:
    async with fresh_database(SPEC) as engine:
        rng = random.Random(11)
        rows: list[dict[str, Any]] = []
        items: list[dict[str, Any]] = []
        for n in range(FLEET):
            state = rng.choices(STATES, weights=[40, 10, 40, 5, 5])[0]
            version = rng.choice(["26.4.1", "26.5", "26.6.1", "26.6.2", "15.7.1"])
            eid, bp = f"MAC-{n:06d}", BLUEPRINTS[n % len(BLUEPRINTS)]
            common = {
                "enrollment_id": eid,
                "blueprint_id": bp,
                "os_version": version,
                "state": state,
                "reason": f"reason for {state}",
                "target_version": "26.6.2",
                "deadline": DEADLINE,
                "due_at": NOW + timedelta(days=5),
                "state_since": NOW - timedelta(minutes=n % 5000),
            }
            rows.append(
                {
                    **common,
                    "os_major": int(version.split(".")[0]),
                    "next_check_at": NOW + timedelta(days=3),
                    "last_report_at": NOW,
                    "updated_at": NOW,
                }
            )
            items.append({**common, "item_id": "item-26", "item_major": 26})
        async with engine.begin() as conn:
            for start in range(0, FLEET, 5000):
                await conn.execute(insert(models.devices), rows[start : start + 5000])
                await conn.execute(insert(models.device_items), items[start : start + 5000])
        async with engine.begin() as conn:  # the running counts, as the hourly snapshot does
            await ComplianceStore(conn).rebuild_counts()
        async with engine.connect() as conn:
            await conn.exec_driver_sql("ANALYZE")
        settings = ComplianceSettings(
            database_url=engine.url.render_as_string(hide_password=False),
            auth_secret=SECRET,
            sweep_interval_seconds=3600,
            snapshot_interval_seconds=3600,
            metrics_interval_seconds=3600,
        )
        app = create_app(SPEC, settings, clock=FixedClock(NOW))
        token = auth.issue_token(SECRET, ["compliance:read"])
        out: dict[str, tuple[float, float]] = {}
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport,
                base_url="http://bench",
                headers={"Authorization": f"Bearer {token}"},
            ) as client:
                for label, query in [
                    ("fleet", ""),
                    ("blueprint", "?blueprint_id=bp-03"),
                    ("item", "?item_id=item-26"),
                    ("major", "?major=26"),
                ]:
                    times = []
                    for _ in range(25):
                        t = time.perf_counter()
                        r = await client.get(f"/v1/summary{query}")
                        times.append((time.perf_counter() - t) * 1000)
                        assert r.status_code == 200, r.text
                    assert r.json()["total"] > 0
                    times = times[5:]  # warm-up
                    out[label] = (statistics.median(times), max(times))
        return out


async def main() -> None:
    print("== compliance: consumer throughput (Tansu → PostgreSQL) and summary time ==")
    wanted = os.environ.get("BENCH_STREAM")
    for stream, phases in STREAMS.items():
        if wanted and stream != wanted:
            continue
        with tansu_process() as (bootstrap, broker):  # a fresh broker (and topics) per stream
            t = time.perf_counter()
            await produce(bootstrap, phases)
            print(
                f"stream {stream}: produced {EVENTS:,} status events for {DEVICES:,} Macs "
                f"in {time.perf_counter() - t:.1f} s"
            )
            bare = await bare_consume(bootstrap)
            consumed = await service_consume(bootstrap, broker.pid)
        rate = consumed.rate
        print(f"  bare aiokafka consumer (read only):      {bare:>9,.0f} events/s")
        print(
            f"  compliance consumer into PostgreSQL:     {rate:>9,.0f} events/s "
            f"({rate / bare:.2f} of bare; target ≥ 20,000/s: "
            f"{'PASS' if rate >= 20000 else 'FAIL'}), its outbox relayed"
        )
        print(
            f"    to the last event committed: {consumed.consumed_only:,.0f} events/s, with "
            f"{consumed.backlog:,} outbox events still to relay then"
        )
        print(
            f"    {REPLICAS} served process(es); counted from the processes' start (start-up "
            f"and the group's forming included): {consumed.cold:,.0f} events/s; Macs judged: "
            f"{consumed.macs:,}"
        )
        # At 20,000 events/s this machine's two cores give 100 µs per event to all parties.
        cores = os.cpu_count() or 1
        parts = ", ".join(f"{party} {us:.0f}" for party, us in consumed.cpu.items())
        print(
            f"    CPU per event over the counted window (µs, from /proc): {parts}; "
            f"all {sum(consumed.cpu.values()):.0f} (20,000/s on {cores} cores "
            f"leaves {cores * 1e6 / 20000:.0f})"
        )
    times = await summary_times()
    for label, (median, worst) in times.items():
        verdict = "PASS" if median <= 50 else "FAIL"
        print(
            f"summary over {FLEET:,} Macs, {label:<9}: median {median:6.1f} ms, "
            f"max {worst:6.1f} ms (target ≤ 50 ms: {verdict})"
        )


if __name__ == "__main__":
    asyncio.run(main())
