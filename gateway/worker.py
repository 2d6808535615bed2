"""Kafka workers: one consumer group per worker, an inbox for exactly-once effects.

For each message: decode the CloudEvent; let the handler do its I/O; then, in
one transaction, record the event id in the inbox and apply the handler's
effect (an id already there is skipped); then commit the offset. A crash
between the effect and the commit redelivers the message, and the inbox turns
that into a no-op. A handler that fails sends the
message, with the error, to the topic's dead-letter companion; it is never
dropped. ``stop`` (SIGTERM) lets the message in hand finish, commits, and
leaves the group.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from cloudevents.core.base import BaseCloudEvent
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.bus import kafka_errors, record_to_event
from gateway.settings import Settings
from gateway.store.db import Sessions, transaction
from gateway.store.models import InboxRow, utcnow
from schemas.events import dead_letter_topic

log = logging.getLogger(__name__)

Effect = Callable[[AsyncSession], Awaitable[None]]
"""What an event changes in the store, applied in the transaction that records it in the inbox."""

Handler = Callable[[BaseCloudEvent], Awaitable[Effect | None]]
"""Does the event's I/O (platform calls) outside any transaction; None: nothing to apply."""


@dataclass(frozen=True)
class WorkerSpec:
    """A named worker: the topics it reads and how it handles an event."""

    name: str
    topics: tuple[str, ...]
    handler: Handler

    @property
    def group_id(self) -> str:
        return f"ywtb.worker.{self.name}"


class Worker:
    def __init__(self, spec: WorkerSpec, sessions: Sessions, settings: Settings) -> None:
        if not settings.kafka.bootstrap:
            raise ValueError("a worker needs YWTB_KAFKA_BOOTSTRAP")
        self.spec = spec
        self._sessions = sessions
        self._settings = settings
        self._bootstrap: str = settings.kafka.bootstrap
        self.applied = 0

    async def apply(self, event: BaseCloudEvent) -> bool:
        """Apply ``event`` once; return False if it was applied before or needs nothing."""
        key = (self.spec.name, event.get_id())
        async with self._sessions() as session:
            if await session.get(InboxRow, key) is not None:
                return False
        effect = await self.spec.handler(event)
        if effect is None:
            return False
        try:
            async with transaction(self._sessions) as session:
                session.add(InboxRow(consumer=key[0], event_id=key[1], processed_at=utcnow()))
                await session.flush()
                await effect(session)
        except IntegrityError:
            return False  # applied meanwhile by another member of the group
        self.applied += 1
        return True

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            *self.spec.topics,
            bootstrap_servers=self._bootstrap,
            group_id=self.spec.group_id,
            client_id=f"{self._settings.kafka.client_id}.{self.spec.name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, acks="all")
        with kafka_errors():
            await consumer.start()
            await producer.start()
        log.info("worker started", extra={"worker": self.spec.name, "topics": self.spec.topics})
        try:
            while not stop.is_set():
                batches = await consumer.getmany(
                    timeout_ms=self._settings.worker.poll_timeout_ms,
                    max_records=self._settings.worker.max_records,
                )
                for tp, records in batches.items():
                    for record in records:
                        await self._process(record, producer)
                        await consumer.commit({tp: record.offset + 1})
                        if stop.is_set():
                            break
                    if stop.is_set():
                        break
        finally:
            try:
                await consumer.stop()  # commits nothing more; leaves the group
            finally:
                await producer.stop()
            log.info("worker stopped", extra={"worker": self.spec.name, "applied": self.applied})

    async def _process(
        self, record: ConsumerRecord[bytes, bytes], producer: AIOKafkaProducer
    ) -> None:
        try:
            event = record_to_event(record)
            await self.apply(event)
        except Exception as exc:
            await self._dead_letter(record, producer, exc)

    async def _dead_letter(
        self, record: ConsumerRecord[bytes, bytes], producer: AIOKafkaProducer, exc: Exception
    ) -> None:
        headers: list[tuple[str, bytes]] = [
            *record.headers,
            ("ywtb_error", f"{type(exc).__name__}: {exc}".encode()),
            ("ywtb_worker", self.spec.name.encode()),
            ("ywtb_original_topic", record.topic.encode()),
            ("ywtb_original_offset", str(record.offset).encode()),
        ]
        log.error(
            "handler failed, dead-lettered",
            extra={"worker": self.spec.name, "error": "".join(traceback.format_exception(exc))},
        )
        with kafka_errors():
            await producer.send_and_wait(
                dead_letter_topic(record.topic), value=record.value, key=record.key, headers=headers
            )
