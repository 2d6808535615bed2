"""Kafka: CloudEvents in binary content mode, topics, clients, and the producer the relay uses.

Only standard Kafka APIs are used, so production points at any Kafka cluster.
aiokafka exceptions are translated here into ``BrokerUnavailable``. Every
Kafka client of the connector is built here from ``KafkaSettings`` (by
``kafka_producer``, ``kafka_consumer``, ``kafka_offset_reader`` or
``kafka_admin``; a test checks no other module constructs one), and started and
stopped with ``started`` / ``stop_quietly``, bounded in time: a broker that is
down or hung never holds a process longer than ``request_timeout_s`` /
``close_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from typing import Any, Protocol, TypeAlias

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.exceptions import CloudEventValidationError, InvalidAttributeValueError
from cloudevents.core.formats.json import JSONFormat

from gateway.protect import json_bytes
from gateway.settings import KafkaSettings
from schemas.errors import BrokerUnavailable

log = logging.getLogger(__name__)

JSON_FORMAT = JSONFormat()

SESSION_TIMEOUT_S = 10.0
"""A consumer not heard from for this long is dropped from its group."""

RETRY_BACKOFF_MS = 500
"""Pause of a client's own retries: with a broker gone, each retry logs an error."""

PRODUCER_BATCH_BYTES = 256 * 1024
"""Largest record batch of a partition: a relay round (a few hundred events) goes out in
one produce request, not a request per 16 KiB (aiokafka's default; under Kafka's 1 MiB)."""

KafkaClient: TypeAlias = "AIOKafkaProducer | AIOKafkaConsumer | AIOKafkaAdminClient"


class OutboxEvent(Protocol):
    """What a message is made of: an ``OutboxRow``, or a row of its columns."""

    @property
    def event_id(self) -> str: ...
    @property
    def topic(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def subject(self) -> str | None: ...
    @property
    def time(self) -> datetime: ...
    @property
    def data(self) -> Any: ...  # its JSON (bytes, as stored) or a JSON value
    @property
    def traceparent(self) -> str | None: ...


def outbox_to_message(row: OutboxEvent) -> ce_kafka.KafkaMessage:
    """An outbox row as a Kafka message: ``ce_`` headers, JSON data, key = aggregate id.

    The headers are those of the CloudEvents SDK's ``to_binary`` (same names, values
    and order; a unit test compares them), built directly: the SDK's event object and
    validation cost more than the rest of publishing a row. The value is the data's
    JSON as stored (``json_bytes``): bytes from the store are published as they are.
    Required attributes left empty are refused as the SDK refuses them.
    """
    required = {"id": row.event_id, "source": row.source, "type": row.type}
    empty = [name for name, value in required.items() if not value]
    if empty:
        raise CloudEventValidationError(
            errors={
                name: [
                    InvalidAttributeValueError(
                        attribute_name=name, msg=f"Attribute '{name}' must not be None or empty"
                    )
                ]
                for name in empty
            }
        )
    stamp = row.time.isoformat()
    if stamp.endswith("+00:00"):
        stamp = stamp[:-6] + "Z"
    headers = {
        "ce_id": row.event_id.encode(),
        "ce_source": row.source.encode(),
        "ce_type": row.type.encode(),
        "ce_time": stamp.encode(),
        "content-type": b"application/json",
    }
    if row.subject:
        headers["ce_subject"] = row.subject.encode()
    if row.traceparent:  # CloudEvents distributed tracing extension: header ce_traceparent
        headers["ce_traceparent"] = row.traceparent.encode()
    headers["ce_specversion"] = b"1.0"
    value = row.data if isinstance(row.data, bytes) else json_bytes(row.data)
    return ce_kafka.KafkaMessage(headers=headers, key=row.key, value=value)


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
    """Translate aiokafka failures and timeouts into ``BrokerUnavailable``.

    aiokafka sometimes lets the cancellation of its own background tasks out
    (stopping a consumer whose fetches are failing does): a ``CancelledError``
    not aimed at the current task is a failure of the client, not a cancellation.
    """
    try:
        yield
    except (KafkaError, TimeoutError, OSError) as exc:
        raise BrokerUnavailable(f"Kafka: {type(exc).__name__}: {exc}") from exc
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise
        raise BrokerUnavailable("Kafka: a client task was cancelled") from exc


def _bootstrap(settings: KafkaSettings) -> str:
    if not settings.bootstrap:
        raise ValueError("Kafka clients need bootstrap servers (YWTB_KAFKA_BOOTSTRAP)")
    return settings.bootstrap


def kafka_producer(settings: KafkaSettings, *, client_id: str | None = None) -> AIOKafkaProducer:
    """A producer that waits for every in-sync replica (at least once; consumers deduplicate)."""
    return AIOKafkaProducer(
        bootstrap_servers=_bootstrap(settings),
        client_id=client_id or settings.client_id,
        acks="all",
        enable_idempotence=settings.idempotent_producer,
        request_timeout_ms=int(settings.request_timeout_s * 1000),
        retry_backoff_ms=RETRY_BACKOFF_MS,
        linger_ms=5,
        max_batch_size=PRODUCER_BATCH_BYTES,
    )


def kafka_consumer(
    settings: KafkaSettings, *, group_id: str | None, client_id: str | None = None
) -> AIOKafkaConsumer:
    """A consumer that commits only when told (``enable_auto_commit`` off), from the earliest.

    It is given no topics: ``subscribe`` after ``started``, so that starting
    does not wait for the group to form (it forms while ``getmany`` polls).
    """
    session_timeout_ms = int(SESSION_TIMEOUT_S * 1000)
    return AIOKafkaConsumer(
        bootstrap_servers=_bootstrap(settings),
        client_id=client_id or settings.client_id,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=session_timeout_ms,
        # A JoinGroup answer may take a whole session timeout: never time out before it.
        request_timeout_ms=max(int(settings.request_timeout_s * 1000), session_timeout_ms + 5000),
        retry_backoff_ms=RETRY_BACKOFF_MS,
    )


def kafka_offset_reader(settings: KafkaSettings, *, group_id: str | None) -> AIOKafkaConsumer:
    """A consumer that never joins its group (``assign`` only): it reads the group's committed
    offsets and single records, for lag and dead-letter counts."""
    return AIOKafkaConsumer(
        bootstrap_servers=_bootstrap(settings),
        client_id=settings.client_id,
        group_id=group_id,
        enable_auto_commit=False,
        fetch_max_wait_ms=50,  # an empty partition answers at once, not after 500 ms
        request_timeout_ms=int(settings.request_timeout_s * 1000) + 1000,
    )


def kafka_admin(settings: KafkaSettings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=_bootstrap(settings),
        client_id=settings.client_id,
        request_timeout_ms=int(settings.request_timeout_s * 1000),
    )


async def stop_quietly(client: KafkaClient, timeout_s: float) -> None:
    """Stop ``client`` within ``timeout_s``; a broken client is dropped, not waited for."""
    try:
        with kafka_errors():
            async with asyncio.timeout(timeout_s):
                if isinstance(client, AIOKafkaAdminClient):
                    await client.close()
                else:
                    await client.stop()
    except BrokerUnavailable as exc:
        log.debug("Kafka client stopped uncleanly", extra={"error": exc.detail})
        await _close_connections(client, timeout_s)


async def _close_connections(client: KafkaClient, timeout_s: float) -> None:
    """Close the connections of a client that gave up half-way through stopping.

    (aiokafka's consumer stops its fetcher before its connections, and lets the
    cancellation of a fetch in flight out of it: its connections stay open.)
    """
    connections = getattr(client, "_client", None)
    if connections is None:
        return
    with contextlib.suppress(BrokerUnavailable), kafka_errors():
        async with asyncio.timeout(timeout_s):
            await connections.close()


@asynccontextmanager
async def started(*clients: KafkaClient, settings: KafkaSettings) -> AsyncIterator[None]:
    """Start ``clients`` in turn, each within ``request_timeout_s``; stop them together,
    bounded by ``close_timeout_s``, on the way out."""
    try:
        for client in clients:
            with kafka_errors():
                async with asyncio.timeout(settings.request_timeout_s):
                    await client.start()
        yield
    finally:
        await asyncio.gather(*(stop_quietly(c, settings.close_timeout_s) for c in clients))


async def create_topics(settings: KafkaSettings, topics: Sequence[str]) -> None:
    """Create the topics that do not exist yet, with the configured partitions."""
    client = kafka_admin(settings)
    async with started(client, settings=settings):
        with kafka_errors():
            async with asyncio.timeout(settings.request_timeout_s):
                existing = set(await client.list_topics())
                new = [
                    NewTopic(t, settings.partitions, settings.replication_factor)
                    for t in topics
                    if t not in existing
                ]
                if new:
                    with contextlib.suppress(TopicAlreadyExistsError):  # created meanwhile
                        await client.create_topics(new)


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
            client = kafka_producer(self.settings)
            try:
                with kafka_errors():
                    async with asyncio.timeout(self.settings.request_timeout_s):
                        await client.start()
            except BrokerUnavailable:
                await stop_quietly(client, self.settings.close_timeout_s)
                raise
            self._producer = client
        return self._producer

    async def reset(self) -> None:
        """Drop the producer (after a failure); the next call connects afresh."""
        client, self._producer = self._producer, None
        self._known_topics.clear()
        if client is not None:
            await stop_quietly(client, self.settings.close_timeout_s)

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        """Create missing topics with the configured partitions (idempotent)."""
        missing = [t for t in topics if t not in self._known_topics]
        if missing:
            await create_topics(self.settings, missing)
            self._known_topics.update(missing)

    async def publish(self, messages: Sequence[tuple[str, ce_kafka.KafkaMessage]]) -> list[bool]:
        """Send ``(topic, message)`` pairs; return, per message, whether the broker acknowledged."""
        return await (await self.send(messages))

    async def send(
        self, messages: Sequence[tuple[str, ce_kafka.KafkaMessage]]
    ) -> Awaitable[list[bool]]:
        """Hand ``(topic, message)`` pairs to the producer; return what awaits, per message,
        whether the broker acknowledged (the caller works while the broker answers).

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

        async def acknowledged() -> list[bool]:
            try:
                async with asyncio.timeout(self.settings.request_timeout_s * 2):
                    results = await asyncio.gather(*futures, return_exceptions=True)
            except TimeoutError as exc:  # the broker took the batch and went silent
                raise BrokerUnavailable("Kafka: no acknowledgement in time") from exc
            return [not isinstance(result, BaseException) for result in results]

        return acknowledged()

    async def ping(self) -> None:
        """Raise ``BrokerUnavailable`` unless the cluster answers a metadata request."""
        producer = await self._ensure_producer()
        with kafka_errors():
            await asyncio.wait_for(producer.client.fetch_all_metadata(), 2.0)

    async def close(self) -> None:
        await self.reset()
