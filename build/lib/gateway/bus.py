"""Kafka: CloudEvents in binary content mode, topics, and the producer the relay uses.

Only standard Kafka APIs are used, so production points at any Kafka cluster.
aiokafka exceptions are translated here into ``BrokerUnavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from gateway.settings import KafkaSettings
from gateway.store.models import OutboxRow
from schemas.errors import BrokerUnavailable

JSON_FORMAT = JSONFormat()


def outbox_to_message(row: OutboxRow) -> ce_kafka.KafkaMessage:
    """An outbox row as a Kafka message: ``ce_`` headers, JSON data, key = aggregate id."""
    attributes: dict[str, Any] = {
        "id": row.event_id,
        "source": row.source,
        "type": row.type,
        "time": row.time,
        "datacontenttype": "application/json",
    }
    if row.subject:
        attributes["subject"] = row.subject
    event = CloudEvent(attributes, row.data)
    return ce_kafka.to_binary(event, JSON_FORMAT, key_mapper=lambda _e: row.key)


def record_to_event(record: ConsumerRecord[bytes, bytes]) -> BaseCloudEvent:
    """A consumed Kafka record as a CloudEvent (its key becomes ``partitionkey``)."""
    message = ce_kafka.KafkaMessage(
        headers={name: value for name, value in record.headers},
        key=record.key,
        value=record.value or b"",
    )
    return ce_kafka.from_binary(message, JSON_FORMAT)


@contextmanager
def kafka_errors() -> Iterator[None]:
    """Translate aiokafka failures and timeouts into ``BrokerUnavailable``."""
    try:
        yield
    except (KafkaError, TimeoutError, OSError) as exc:
        raise BrokerUnavailable(f"Kafka: {type(exc).__name__}: {exc}") from exc


async def create_topics(settings: KafkaSettings, topics: Sequence[str]) -> None:
    """Create the topics that do not exist yet, with the configured partitions."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap,
        client_id=settings.client_id,
        request_timeout_ms=int(settings.request_timeout_s * 1000),
    )
    with kafka_errors():
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            new = [
                NewTopic(t, settings.partitions, settings.replication_factor)
                for t in topics
                if t not in existing
            ]
            if new:
                with contextlib.suppress(TopicAlreadyExistsError):  # created meanwhile
                    await admin.create_topics(new)
        finally:
            await admin.close()


class KafkaBus:
    """Producer and topic administration for one Kafka cluster."""

    def __init__(self, settings: KafkaSettings) -> None:
        if not settings.bootstrap:
            raise ValueError("KafkaBus needs bootstrap servers (YWTB_KAFKA_BOOTSTRAP)")
        self.settings = settings
        self.bootstrap: str = settings.bootstrap
        self._producer: AIOKafkaProducer | None = None
        self._known_topics: set[str] = set()

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            timeout_ms = int(self.settings.request_timeout_s * 1000)
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                client_id=self.settings.client_id,
                acks="all",
                # At-least-once either way: consumers deduplicate by event id.
                enable_idempotence=self.settings.idempotent_producer,
                request_timeout_ms=timeout_ms,
                linger_ms=5,
            )
            try:
                with kafka_errors():
                    await producer.start()
            except BrokerUnavailable:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def reset(self) -> None:
        """Drop the producer (after a failure); the next call connects afresh."""
        producer, self._producer = self._producer, None
        self._known_topics.clear()
        if producer is not None:
            try:
                with kafka_errors():
                    await asyncio.wait_for(producer.stop(), self.settings.request_timeout_s)
            except BrokerUnavailable:
                pass  # it was already broken; a new producer replaces it

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        """Create missing topics with the configured partitions (idempotent)."""
        missing = [t for t in topics if t not in self._known_topics]
        if missing:
            await create_topics(self.settings, missing)
            self._known_topics.update(missing)

    async def publish(self, messages: Sequence[tuple[str, ce_kafka.KafkaMessage]]) -> list[bool]:
        """Send ``(topic, message)`` pairs; return, per message, whether the broker acknowledged.

        Messages go out in order; aiokafka keeps one batch in flight per
        partition, so messages of one key arrive in the order given.
        """
        producer = await self._ensure_producer()
        await self.ensure_topics(sorted({topic for topic, _ in messages}))
        futures = []
        with kafka_errors():
            for topic, message in messages:
                key = message.key.encode() if isinstance(message.key, str) else message.key
                futures.append(
                    await producer.send(
                        topic,
                        value=message.value,
                        key=key,
                        headers=list(message.headers.items()),
                    )
                )
        results = await asyncio.gather(*futures, return_exceptions=True)
        return [not isinstance(result, BaseException) for result in results]

    async def ping(self) -> None:
        """Raise ``BrokerUnavailable`` unless the cluster answers a metadata request."""
        producer = await self._ensure_producer()
        with kafka_errors():
            await asyncio.wait_for(producer.client.fetch_all_metadata(), 2.0)

    async def close(self) -> None:
        await self.reset()
