"""In-process bus for the embedded single-process mode and unit tests.

Each topic is an append-only list; each (group, topic) has its own committed offset, so
groups replay from the start and a failing handler sees the event again, as on Kafka.
The log lives in memory. The outbox keeps an event until the bus has accepted it, so a crash
before that loses nothing; but an event accepted here and not yet handled by a consumer is
lost if the process dies. That is the embedded mode's trade-off: production uses Kafka.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence

from managed_os.bus.protocol import BatchHandler, EventHandler
from managed_os.cloudevents import CloudEvent
from managed_os.tasks import stop_task

log = logging.getLogger(__name__)


class InProcessBus:
    def __init__(self, retry_delay: float = 0.2) -> None:
        self._log: dict[str, list[CloudEvent]] = defaultdict(list)
        self._offsets: dict[tuple[str, str], int] = defaultdict(int)
        self._subs: list[_InProcessSubscription] = []
        self._retry_delay = retry_delay
        self.running = False

    async def start(self) -> None:
        self.running = True

    async def stop(self) -> None:
        self.running = False
        for sub in list(self._subs):
            await sub.stop()

    async def ping(self) -> bool:
        return self.running

    async def publish(self, topic: str, event: CloudEvent) -> None:
        if not self.running:
            raise ConnectionError("in-process bus is not running")
        self._log[topic].append(event)
        for sub in self._subs:
            sub.wakeup.set()

    async def publish_many(self, events: Sequence[tuple[str, CloudEvent]]) -> list[int]:
        for topic, event in events:
            await self.publish(topic, event)
        return list(range(len(events)))

    async def subscribe(
        self, topics: Sequence[str], group: str, handler: EventHandler
    ) -> _InProcessSubscription:
        sub = _InProcessSubscription(self, list(topics), group, handler)
        self._subs.append(sub)
        sub.task = asyncio.create_task(sub.run(), name=f"inprocess-consumer-{group}")
        return sub

    async def subscribe_batch(
        self,
        topics: Sequence[str],
        group: str,
        handler: BatchHandler,
        max_batch: int = 1000,
        members: int = 1,
    ) -> _InProcessSubscription:
        # One log per topic, no partitions: one member, whatever `members` asks for.
        sub = _InProcessSubscription(self, list(topics), group, None, handler, max_batch)
        self._subs.append(sub)
        sub.task = asyncio.create_task(sub.run(), name=f"inprocess-consumer-{group}")
        return sub

    def committed(self, group: str, topic: str) -> int:
        return self._offsets[(group, topic)]


class _InProcessSubscription:
    def __init__(
        self,
        bus: InProcessBus,
        topics: list[str],
        group: str,
        handler: EventHandler | None,
        batch_handler: BatchHandler | None = None,
        max_batch: int = 1000,
    ) -> None:
        self.bus, self.topics, self.group, self.handler = bus, topics, group, handler
        self.batch_handler, self.max_batch = batch_handler, max_batch
        self.task: asyncio.Task[None] | None = None
        self.wakeup = asyncio.Event()
        self.stopping = False

    async def run(self) -> None:
        while not self.stopping:
            self.wakeup.clear()
            progressed = False
            for topic in self.topics:
                progressed |= await self._drain(topic)
            if not progressed and not self.stopping:
                # A plain Event.wait: asyncio.wait_for around a Condition can swallow the
                # cancellation that `stop` sends (Python 3.11), leaving stop waiting forever.
                await self.wakeup.wait()

    async def _drain(self, topic: str) -> bool:
        key = (self.group, topic)
        events = self.bus._log[topic]
        progressed = False
        if self.batch_handler is not None:
            while self.bus._offsets[key] < len(events) and not self.stopping:
                start = self.bus._offsets[key]
                batch = events[start : start + self.max_batch]
                try:
                    await self.batch_handler(batch)
                except Exception:
                    log.exception(
                        "batch handler failed; will redeliver", extra={"group": self.group}
                    )
                    await asyncio.sleep(self.bus._retry_delay)
                    return True
                self.bus._offsets[key] = start + len(batch)
                progressed = True
            return progressed
        assert self.handler is not None
        while self.bus._offsets[key] < len(events) and not self.stopping:
            event = events[self.bus._offsets[key]]
            try:
                await self.handler(event)
            except Exception:
                log.exception("handler failed; will redeliver", extra={"group": self.group})
                await asyncio.sleep(self.bus._retry_delay)
                return True
            self.bus._offsets[key] += 1
            progressed = True
        return progressed

    async def stop(self, grace: float = 5.0) -> None:
        """Let the event in hand finish (its transaction commits or rolls back whole), then
        stop; cancel only after `grace`."""
        self.stopping = True
        self.wakeup.set()
        await stop_task(self.task, grace)
        self.task = None
        if self in self.bus._subs:
            self.bus._subs.remove(self)
