"""What every bus backend promises. The contract suite in tests/integration checks it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from managed_os.cloudevents import CloudEvent

EventHandler = Callable[[CloudEvent], Awaitable[None]]
# A batch handler applies a list of events all or nothing (one transaction); events of one
# key arrive in order within and across batches.
BatchHandler = Callable[[Sequence[CloudEvent]], Awaitable[None]]
# (group, topic, partition, messages behind the end of the partition)
LagReporter = Callable[[str, str, int, int], None]


class Subscription(Protocol):
    async def stop(self) -> None:
        """Stop consuming; offsets of fully handled events stay committed."""


class EventBus(Protocol):
    """Publish/subscribe over named topics, at-least-once.

    - `publish` returns only once the bus has accepted the event (Kafka: acks=all); it raises
      if the event could not be accepted, so the outbox relay keeps it for a retry.
    - Events with the same `subject` (the key) are delivered in publish order.
    - A subscriber group gets every event of its topics once per group; each event is
      handed to `handler`, and its offset is committed only after `handler` returns. If the
      handler raises, the event is redelivered (after a short back-off), so handlers must be
      idempotent (see `managed_os.inbox`).
    - New groups start from the earliest retained event.
    """

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, topic: str, event: CloudEvent) -> None: ...

    async def publish_many(self, events: Sequence[tuple[str, CloudEvent]]) -> list[int]:
        """Publish (topic, event) pairs, pipelined; returns the indices the bus accepted (the
        rest stay with the caller for a retry). Per (topic, key) the accepted events are
        always a prefix of that key's events, so a retry keeps each key in order."""
        ...

    async def subscribe(
        self, topics: Sequence[str], group: str, handler: EventHandler
    ) -> Subscription: ...

    async def subscribe_batch(
        self,
        topics: Sequence[str],
        group: str,
        handler: BatchHandler,
        max_batch: int = 1000,
        members: int = 1,
    ) -> Subscription:
        """Like `subscribe`, but `handler` gets up to `max_batch` events at a time and every
        offset of the batch is committed only after it returns; if it raises, the whole batch
        is redelivered. `members`: how many members of the group this process runs, each
        with its own partitions, so up to that many batches (of different keys) are in
        flight at once; a bus without partitions runs one."""
        ...

    async def ping(self) -> bool:
        """True when the bus can currently accept events (readiness)."""
        ...
