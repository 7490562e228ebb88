"""Kafka backend (aiokafka). Broker-agnostic: tested on Tansu, targets Apache Kafka/Strimzi.

Events travel in CloudEvents binary mode: key = subject, value = JSON data, `ce_*` headers.
Offsets are committed per record only after the handler has returned (and so after the
handler's own database commit): a crash replays, the idempotent consumer absorbs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from managed_os.bus.protocol import BatchHandler, EventHandler, LagReporter
from managed_os.cloudevents import CloudEvent, EnvelopeError
from managed_os.tasks import stop_task

log = logging.getLogger(__name__)


class KafkaBus:
    def __init__(
        self,
        bootstrap_servers: str,
        *,
        client_id: str = "managed-os",
        topics: Sequence[str] = (),
        partitions: int = 3,
        replication_factor: int = 1,
        retry_delay: float = 1.0,
        request_timeout_ms: int = 15000,
        on_lag: LagReporter | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id
        self.topics = list(topics)
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.retry_delay = retry_delay
        self.request_timeout_ms = request_timeout_ms
        self.on_lag = on_lag
        self._producer: AIOKafkaProducer | None = None
        self._subs: list[_KafkaSubscription] = []

    async def start(self) -> None:
        await self.ensure_topics(self.topics)
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            acks="all",
            request_timeout_ms=self.request_timeout_ms,
            # A partition's batch fills to this, then `send` waits for the sender to drain
            # it: at aiokafka's 16 KiB (about 25 events) a relay pass of 2,000 events waited
            # 1.1-1.7 s on a busy process (0.1-0.6 s now). Half of Kafka's default 1 MB
            # message limit, which a batch must stay under.
            max_batch_size=512 * 1024,
        )
        await producer.start()
        self._producer = producer

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        """Create missing topics (real clusters pre-create them, e.g. Strimzi KafkaTopic)."""
        if not topics:
            return
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers, client_id=f"{self.client_id}-admin"
        )
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [t for t in topics if t not in existing]
            if missing:
                new = [NewTopic(t, self.partitions, self.replication_factor) for t in missing]
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(new)
        finally:
            await admin.close()

    async def stop(self) -> None:
        for sub in list(self._subs):
            await sub.stop()
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def ping(self) -> bool:
        if self._producer is None:
            return False
        try:
            return bool(
                await asyncio.wait_for(self._producer.client.force_metadata_update(), timeout=3)
            )
        except (TimeoutError, KafkaError, OSError):
            return False

    async def publish(self, topic: str, event: CloudEvent) -> None:
        if self._producer is None:
            raise ConnectionError("Kafka producer is not started")
        key, value, headers = event.to_kafka()
        await self._producer.send_and_wait(topic, value=value, key=key, headers=headers)

    async def publish_many(self, events: Sequence[tuple[str, CloudEvent]]) -> list[int]:
        """Pipelined, in waves: each wave holds at most one event per (topic, key), queued
        together and acknowledged before the next wave is sent. An event whose wave failed
        stops its key (nothing later of that key is sent) and ends the run after that wave,
        so a retry can never put a key's older event after a newer one. Returns the indices
        acknowledged."""
        if self._producer is None:
            raise ConnectionError("Kafka producer is not started")
        waves: list[list[int]] = []
        depth: dict[tuple[str, str], int] = {}
        for i, (topic, event) in enumerate(events):
            d = depth.get((topic, event.subject), 0)
            depth[(topic, event.subject)] = d + 1
            if d == len(waves):
                waves.append([])
            waves[d].append(i)
        accepted: list[int] = []
        for wave in waves:
            futures: list[tuple[int, asyncio.Future[object]]] = []
            try:
                for i in wave:
                    topic, event = events[i]
                    key, value, headers = event.to_kafka()
                    sent = await self._producer.send(topic, value=value, key=key, headers=headers)
                    futures.append((i, sent))
            except KafkaError:
                log.warning("publishing stopped early", exc_info=True)
            failed = len(futures) < len(wave)
            for i, future in futures:
                try:
                    await future
                except KafkaError:
                    log.warning("publish not acknowledged", exc_info=True)
                    failed = True
                    continue
                accepted.append(i)
            if failed:
                break
        return accepted

    async def subscribe(
        self, topics: Sequence[str], group: str, handler: EventHandler
    ) -> _KafkaSubscription:
        return await self._subscribe(topics, group, handler, None, 200)

    async def subscribe_batch(
        self,
        topics: Sequence[str],
        group: str,
        handler: BatchHandler,
        max_batch: int = 1000,
        members: int = 1,
    ) -> _KafkaSubscription | _Members:
        """`members` consumers of the group in this process: the group's coordinator gives
        each its own partitions, and while one member's batch waits on the database another's
        runs its Python, so the two overlap on different cores."""
        # Started together, so the group forms once instead of rebalancing per member; if
        # one cannot start, the others are stopped again.
        results = await asyncio.gather(
            *(self._subscribe(topics, group, None, handler, max_batch) for _ in range(members)),
            return_exceptions=True,
        )
        subs = [r for r in results if isinstance(r, _KafkaSubscription)]
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            await _Members(subs).stop()
            raise failed[0]
        return subs[0] if members == 1 else _Members(subs)

    async def _subscribe(
        self,
        topics: Sequence[str],
        group: str,
        handler: EventHandler | None,
        batch_handler: BatchHandler | None,
        max_records: int,
    ) -> _KafkaSubscription:
        await self.ensure_topics(topics)
        consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=self.bootstrap_servers,
            client_id=f"{self.client_id}-{group}",
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            metadata_max_age_ms=5000,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1500,
        )
        await consumer.start()
        sub = _KafkaSubscription(self, consumer, group, handler, batch_handler, max_records)
        sub.task = asyncio.create_task(sub.run(), name=f"kafka-consumer-{group}")
        self._subs.append(sub)
        return sub


class _Members:
    """Several members of one group in one process, stopped together."""

    def __init__(self, subs: list[_KafkaSubscription]) -> None:
        self.subs = subs

    async def stop(self) -> None:
        """Stop every member (each commits what it handled), then raise the first error."""
        results = await asyncio.gather(*(sub.stop() for sub in self.subs), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result


class _KafkaSubscription:
    def __init__(
        self,
        bus: KafkaBus,
        consumer: AIOKafkaConsumer,
        group: str,
        handler: EventHandler | None,
        batch_handler: BatchHandler | None = None,
        max_records: int = 200,
    ) -> None:
        self.bus, self.consumer, self.group = bus, consumer, group
        self.handler, self.batch_handler, self.max_records = handler, batch_handler, max_records
        self.task: asyncio.Task[None] | None = None
        self._stopping = False

    async def run(self) -> None:
        while not self._stopping:
            try:
                batches = await self.consumer.getmany(timeout_ms=500, max_records=self.max_records)
                self._report_lag(batches)
                if self.batch_handler is not None:
                    if batches and not self._stopping:
                        await self._handle_batch(self.batch_handler, batches)
                    continue
                for tp, records in batches.items():
                    for record in records:
                        # On stop, leave the rest of the fetched batch uncommitted: the
                        # group's next member gets it, instead of a cancel mid-handler.
                        if self._stopping or not await self._handle(tp, record):
                            break
            except asyncio.CancelledError:
                raise
            except KafkaError:
                log.warning("kafka consumer error; retrying", exc_info=True)
                await asyncio.sleep(self.bus.retry_delay)

    def _report_lag(self, batches: dict[TopicPartition, list[Any]]) -> None:
        """Messages behind the partition's end after this fetch (0 when a fetch came back
        empty: the consumer is caught up)."""
        if self.bus.on_lag is None:
            return
        for tp in self.consumer.assignment():
            records = batches.get(tp)
            highwater = self.consumer.highwater(tp)
            if records and highwater is not None:
                lag = max(0, highwater - records[-1].offset - 1)
            elif batches:
                continue  # not fetched this time: keep the last figure
            else:
                lag = 0
            self.bus.on_lag(self.group, tp.topic, tp.partition, lag)

    async def _handle_batch(
        self, handler: BatchHandler, batches: dict[TopicPartition, list[Any]]
    ) -> None:
        """Hand every fetched event to the handler at once (partition by partition, so each
        key keeps its order); commit all the offsets after it returns, or rewind them all."""
        events: list[CloudEvent] = []
        for tp, records in batches.items():
            for record in records:
                try:
                    events.append(CloudEvent.from_kafka(record.value, record.headers))
                except EnvelopeError as exc:
                    log.error("skipping unreadable event", extra={"tp": str(tp), "error": str(exc)})
        try:
            await handler(events)
        except Exception:
            log.exception("batch handler failed; will redeliver", extra={"group": self.group})
            for tp, records in batches.items():
                self.consumer.seek(tp, records[0].offset)
            await asyncio.sleep(self.bus.retry_delay)
            return
        await self.consumer.commit({tp: records[-1].offset + 1 for tp, records in batches.items()})

    async def _handle(self, tp: TopicPartition, record: object) -> bool:
        offset: int = record.offset  # type: ignore[attr-defined]
        try:
            event = CloudEvent.from_kafka(record.value, record.headers)  # type: ignore[attr-defined]
        except EnvelopeError as exc:
            # A message we can never read must not wedge the partition: log and skip it.
            log.error("skipping unreadable event", extra={"tp": str(tp), "error": str(exc)})
            await self.consumer.commit({tp: offset + 1})
            return True
        assert self.handler is not None
        try:
            await self.handler(event)
        except Exception:
            log.exception("handler failed; will redeliver", extra={"group": self.group})
            self.consumer.seek(tp, offset)
            await asyncio.sleep(self.bus.retry_delay)
            return False
        await self.consumer.commit({tp: offset + 1})
        return True

    async def stop(self) -> None:
        """Let the in-flight event finish, commit, leave the group."""
        self._stopping = True
        await stop_task(self.task, grace=5)
        self.task = None
        await self.consumer.stop()
        if self in self.bus._subs:
            self.bus._subs.remove(self)
