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

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from managed_os.bus.protocol import EventHandler
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
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id
        self.topics = list(topics)
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.retry_delay = retry_delay
        self.request_timeout_ms = request_timeout_ms
        self._producer: AIOKafkaProducer | None = None
        self._subs: list[_KafkaSubscription] = []

    async def start(self) -> None:
        await self.ensure_topics(self.topics)
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            acks="all",
            request_timeout_ms=self.request_timeout_ms,
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

    async def subscribe(
        self, topics: Sequence[str], group: str, handler: EventHandler
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
        sub = _KafkaSubscription(self, consumer, group, handler)
        sub.task = asyncio.create_task(sub.run(), name=f"kafka-consumer-{group}")
        self._subs.append(sub)
        return sub


class _KafkaSubscription:
    def __init__(
        self, bus: KafkaBus, consumer: AIOKafkaConsumer, group: str, handler: EventHandler
    ) -> None:
        self.bus, self.consumer, self.group, self.handler = bus, consumer, group, handler
        self.task: asyncio.Task[None] | None = None
        self._stopping = False

    async def run(self) -> None:
        while not self._stopping:
            try:
                batches = await self.consumer.getmany(timeout_ms=500, max_records=200)
                for tp, records in batches.items():
                    for record in records:
                        if not await self._handle(tp, record):
                            break
            except asyncio.CancelledError:
                raise
            except KafkaError:
                log.warning("kafka consumer error; retrying", exc_info=True)
                await asyncio.sleep(self.bus.retry_delay)

    async def _handle(self, tp: TopicPartition, record: object) -> bool:
        offset: int = record.offset  # type: ignore[attr-defined]
        try:
            event = CloudEvent.from_kafka(record.value, record.headers)  # type: ignore[attr-defined]
        except EnvelopeError as exc:
            # A message we can never read must not wedge the partition: log and skip it.
            log.error("skipping unreadable event", extra={"tp": str(tp), "error": str(exc)})
            await self.consumer.commit({tp: offset + 1})
            return True
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
