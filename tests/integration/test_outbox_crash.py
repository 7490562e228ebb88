"""Nothing is lost and nothing is applied twice when the relay dies at the worst moment."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from managed_os.bus.inprocess import InProcessBus
from managed_os.bus.kafka import KafkaBus
from managed_os.cloudevents import CloudEvent
from managed_os.inbox import idempotent
from managed_os.outbox import OutboxRelay
from tests.support.backends import (
    ProbeUnitOfWork,
    inbox_table,
    outbox_table,
    sql_engine,
    undelivered,
)

ROOT = Path(__file__).resolve().parents[2]


class HangingBus(InProcessBus):
    """Publishes (or not) and then never returns: a relay killed mid-flight."""

    def __init__(self, deliver_first: bool) -> None:
        super().__init__()
        self.deliver_first = deliver_first
        self.entered = asyncio.Event()

    async def publish(self, topic: str, event: CloudEvent) -> None:
        if self.deliver_first:
            await super().publish(topic, event)
        self.entered.set()
        await asyncio.Event().wait()


def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'crash.db'}"
    return str(request.getfixturevalue("pg").create())


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("killed", ["before_publish", "after_publish_before_delete"])
async def test_a_relay_killed_mid_flight_loses_nothing_and_the_consumer_applies_once(
    backend, killed, tmp_path, request
):
    async with sql_engine(db_url(backend, tmp_path, request)) as engine:

        def make() -> ProbeUnitOfWork:
            return ProbeUnitOfWork(engine, outbox_table, inbox_table)

        async with make() as uow:
            await uow.outbox.add("t", CloudEvent(type="x.v1", source="/t", subject="k", data={}))
            await uow.commit()

        hanging = HangingBus(deliver_first=killed == "after_publish_before_delete")
        await hanging.start()
        relay = OutboxRelay(make, hanging)
        relay.start()
        await asyncio.wait_for(hanging.entered.wait(), 10)
        await relay.stop(grace=0)  # the kill: cancelled mid-publish, its transaction never commits

        healthy = InProcessBus()
        await healthy.start()
        # What the first relay got out before dying is still on the (durable) log.
        for ev in hanging._log["t"]:
            await healthy.publish("t", ev)
        restarted = OutboxRelay(make, healthy)
        await restarted.flush()

        applied: list[str] = []

        async def apply(uow: ProbeUnitOfWork, ev: CloudEvent) -> None:
            await uow.effects.add(ev.id)
            applied.append(ev.id)

        handler = idempotent("crash-consumer", make, apply)
        for ev in list(healthy._log["t"]):
            await handler(ev)

        expected_copies = 2 if killed == "after_publish_before_delete" else 1
        assert len(healthy._log["t"]) == expected_copies
        assert len(applied) == 1
        async with make() as uow:
            assert await undelivered(uow.outbox) == 0
            assert await uow.effects.all() == applied


async def test_an_event_committed_by_a_process_killed_before_relaying_arrives_once_on_kafka(
    pg, kafka
):
    url = pg.create()
    event_id = str(uuid.uuid4())
    topic = f"crash-topic-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.crash_writer", url, event_id, topic],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
    assert line.strip() == b"committed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)

    bus = KafkaBus(kafka)
    await bus.start()
    async with sql_engine(url) as engine:

        def make() -> ProbeUnitOfWork:
            return ProbeUnitOfWork(engine, outbox_table, inbox_table)

        # The restarted relay finds the committed row and delivers it.
        async with make() as uow:
            (record,) = await uow.outbox.pending(10)
            assert record.event.id == event_id

        received: list[str] = []

        async def apply(uow: ProbeUnitOfWork, ev: CloudEvent) -> None:
            received.append(ev.id)

        await bus.subscribe([topic], "crash-check", idempotent("crash-check", make, apply))

        relay = OutboxRelay(make, bus)
        await relay.flush()
        await relay.flush()  # a second pass finds nothing more
        async with asyncio.timeout(30):
            while not received:
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        async with make() as uow:
            assert await undelivered(uow.outbox) == 0
    await bus.stop()
    assert received == [event_id]
