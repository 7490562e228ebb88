"""The event-bus contract, on both backends: in-process and Kafka (a real Tansu broker)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from managed_os.bus.inprocess import InProcessBus
from managed_os.bus.kafka import KafkaBus
from managed_os.bus.protocol import EventBus
from managed_os.cloudevents import CloudEvent


def event(n: int, key: str = "k") -> CloudEvent:
    return CloudEvent(type="test.happened.v1", source="/test", subject=key, data={"n": n})


@pytest.fixture(params=["inprocess", "kafka"])
async def make_bus(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[], EventBus]]:
    """A factory of started buses; on Kafka every bus talks to the same broker, in-process
    they are one object (the in-process bus only exists inside one process)."""
    started: list[EventBus] = []
    if request.param == "kafka":
        bootstrap = request.getfixturevalue("kafka")

        def factory() -> EventBus:
            bus = KafkaBus(bootstrap, retry_delay=0.2)
            started.append(bus)
            return bus
    else:
        single = InProcessBus(retry_delay=0.05)

        def factory() -> EventBus:
            if not started:
                started.append(single)
            return single

    yield factory
    for bus in started:
        await bus.stop()


async def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


def topic() -> str:
    return f"contract-{uuid.uuid4().hex[:8]}"


async def test_a_subscriber_receives_every_event_in_publish_order_per_key(make_bus):
    bus = make_bus()
    await bus.start()
    t = topic()
    got: list[CloudEvent] = []

    async def handler(ev: CloudEvent) -> None:
        got.append(ev)

    await bus.subscribe([t], "g", handler)
    sent = [event(n, key=f"key-{n % 3}") for n in range(30)]
    for ev in sent:
        await bus.publish(t, ev)
    await wait_for(lambda: len(got) >= 30)
    assert {e.id for e in got} == {e.id for e in sent}
    for key in ("key-0", "key-1", "key-2"):
        assert [e.data["n"] for e in got if e.subject == key] == [
            e.data["n"] for e in sent if e.subject == key
        ]
    assert got[0].type == "test.happened.v1" and got[0].source == "/test"


async def test_each_group_gets_every_event_and_a_new_group_starts_from_the_beginning(make_bus):
    bus = make_bus()
    await bus.start()
    t = topic()
    for n in range(5):
        await bus.publish(t, event(n))
    a: list[int] = []
    b: list[int] = []

    async def into_a(ev: CloudEvent) -> None:
        a.append(ev.data["n"])

    async def into_b(ev: CloudEvent) -> None:
        b.append(ev.data["n"])

    await bus.subscribe([t], "group-a", into_a)
    await bus.subscribe([t], "group-b", into_b)
    await wait_for(lambda: len(a) >= 5 and len(b) >= 5)
    assert a == b == [0, 1, 2, 3, 4]


async def test_an_event_whose_handler_fails_is_delivered_again(make_bus):
    bus = make_bus()
    await bus.start()
    t = topic()
    attempts: list[int] = []
    done: list[int] = []

    async def flaky(ev: CloudEvent) -> None:
        attempts.append(ev.data["n"])
        if attempts.count(ev.data["n"]) < 3:
            raise RuntimeError("transient")
        done.append(ev.data["n"])

    await bus.subscribe([t], "g", flaky)
    await bus.publish(t, event(1))
    await bus.publish(t, event(2))
    await wait_for(lambda: done == [1, 2])
    assert attempts == [1, 1, 1, 2, 2, 2]


async def test_a_restarted_subscriber_resumes_after_the_last_handled_event(make_bus):
    bus = make_bus()
    await bus.start()
    t = topic()
    first: list[int] = []

    async def into_first(ev: CloudEvent) -> None:
        first.append(ev.data["n"])

    sub = await bus.subscribe([t], "resume", into_first)
    for n in range(3):
        await bus.publish(t, event(n))
    await wait_for(lambda: len(first) >= 3)
    await sub.stop()

    for n in range(3, 5):
        await bus.publish(t, event(n))
    second: list[int] = []

    async def into_second(ev: CloudEvent) -> None:
        second.append(ev.data["n"])

    other = make_bus()
    if other is not bus:
        await other.start()
    await other.subscribe([t], "resume", into_second)
    await wait_for(lambda: len(second) >= 2)
    await asyncio.sleep(0.5)
    assert first == [0, 1, 2]
    assert second == [3, 4]


async def test_ping_reports_a_started_bus_as_ready(make_bus):
    bus = make_bus()
    await bus.start()
    assert await bus.ping() is True


async def test_a_batch_subscriber_gets_every_event_in_key_order_and_a_failed_batch_again(
    make_bus,
):
    bus = make_bus()
    await bus.start()
    t = topic()
    seen: list[list[int]] = []
    applied: list[CloudEvent] = []
    failed_once = False

    async def handler(batch) -> None:
        nonlocal failed_once
        seen.append([e.data["n"] for e in batch])
        assert len(batch) <= 7
        if not failed_once and any(e.data["n"] == 11 for e in batch):
            failed_once = True
            raise RuntimeError("transient")
        applied.extend(batch)

    sent = [event(n, key=f"key-{n % 3}") for n in range(40)]
    for ev in sent:
        await bus.publish(t, ev)
    await bus.subscribe_batch([t], "gb", handler, max_batch=7)
    await wait_for(lambda: len({e.id for e in applied}) >= 40)
    assert failed_once
    assert {e.id for e in applied} == {e.id for e in sent}
    for key in ("key-0", "key-1", "key-2"):
        ns = [e.data["n"] for e in applied if e.subject == key]
        assert ns == sorted(ns) and len(ns) == len(set(ns))  # in order, nothing applied twice
    assert any(len(b) > 1 for b in seen)  # really batched


async def test_batch_members_share_the_partitions_each_event_once_in_key_order(make_bus):
    """Several members of one group in one process: on Kafka each gets its own partitions, so
    batches of different keys are in flight at once; every event is still applied once, in
    order per key. The in-process bus (no partitions) runs one member."""
    bus = make_bus()
    await bus.start()
    t = topic()
    applied: list[CloudEvent] = []
    in_flight = most = 0

    async def handler(batch) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            await asyncio.sleep(0.05)  # a database transaction
            applied.extend(batch)
        finally:
            in_flight -= 1

    sent = [event(n, key=f"key-{n % 12}") for n in range(240)]
    for ev in sent:
        await bus.publish(t, ev)
    sub = await bus.subscribe_batch([t], "gm", handler, max_batch=10, members=3)
    await wait_for(lambda: len(applied) >= 240)
    await asyncio.sleep(0.3)
    await sub.stop()
    assert sorted(e.id for e in applied) == sorted(e.id for e in sent)  # each once
    for key in {e.subject for e in sent}:
        ns = [e.data["n"] for e in applied if e.subject == key]
        assert ns == sorted(ns)
    if isinstance(bus, KafkaBus):
        assert most >= 2  # members' batches overlapped
    else:
        assert most == 1


async def test_members_that_started_are_stopped_when_another_cannot_start(kafka) -> None:
    bus = KafkaBus(kafka, retry_delay=0.2)
    await bus.start()
    real, calls, started = bus._subscribe, 0, 0

    async def flaky(*args, **kwargs):
        nonlocal calls, started
        calls += 1
        if calls == 2:
            raise ConnectionError("broker refused the second member")
        sub = await real(*args, **kwargs)
        started += 1
        return sub

    bus._subscribe = flaky  # type: ignore[method-assign]

    async def handler(batch) -> None:
        return None

    try:
        with pytest.raises(ConnectionError):
            await bus.subscribe_batch([topic()], "gf", handler, members=3)
        # The other two members finish starting (before the error, or after it)...
        await wait_for(lambda: started == 2)
        await asyncio.sleep(0.2)
        assert bus._subs == []  # ...and have left the group again
    finally:
        await bus.stop()
