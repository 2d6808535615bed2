"""Kafka workers: one consumer group per worker, an inbox for exactly-once effects.

For each message: decode the CloudEvent; let the handler do its I/O; then, in
one transaction, record the event id in the inbox and apply the handler's
effect (an id already there is skipped); then commit the offset. A crash
between the effect and the commit redelivers the message, and the inbox turns
that into a no-op. ``stop`` (SIGTERM) lets the message in hand finish,
commits, and leaves the group.

Failures (Camel's redelivery policy and dead-letter channel):

- ``TransientError``: retried in place with back-off (``in_place_attempts``),
  then sent to ``<topic>.retry`` with a due time and attempt count in headers,
  and retried from there after each of ``retry_delays_s``; after the last, left
  to the sweeper (``gateway.sweeper``), which finds the work still open in the
  store and drives it again once the platform is back. An *ordered* worker
  (status pushes) instead blocks its partition and retries until the platform
  is back, so later messages of the same key never overtake an earlier one.
- ``PermanentError`` or an undecodable message: to ``<topic>.dlq`` at once.

A dead letter keeps the original headers and payload and adds the error, the
attempt history and the worker's name; ``ywtb dlq replay`` sends it back
through ``<topic>.retry`` to that worker, with its event id unchanged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from cloudevents.core.base import BaseCloudEvent
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_never,
    wait_exponential,
)

from gateway.bus import create_topics, kafka_errors, record_to_event
from gateway.deliveries import DeliveryStatus, record_delivery
from gateway.settings import Settings
from gateway.store.db import Sessions, transaction
from gateway.store.models import InboxRow, utcnow
from gateway.tracing import consuming
from schemas.errors import TransientError
from schemas.events import all_topics, dead_letter_topic, retry_topic

log = logging.getLogger(__name__)

Effect = Callable[[AsyncSession], Awaitable[None]]
"""What an event changes in the store, applied in the transaction that records it in the inbox."""

Handler = Callable[[BaseCloudEvent], Awaitable[Effect | None]]
"""Does the event's I/O (platform calls) outside any transaction; None: nothing to apply."""

# Headers the worker adds to retried and dead-lettered messages.
H_WORKER = "ywtb_worker"
H_ATTEMPT = "ywtb_attempt"
H_DUE_AT = "ywtb_due_at"
H_ERROR = "ywtb_error"
H_HISTORY = "ywtb_history"
H_TOPIC = "ywtb_original_topic"
H_PARTITION = "ywtb_original_partition"
H_OFFSET = "ywtb_original_offset"
H_DEAD_AT = "ywtb_dead_at"
WORKER_HEADER_PREFIX = "ywtb_"


@dataclass(frozen=True)
class WorkerSpec:
    """A named worker: the topics it reads and how it handles an event.

    ``tracks_delivery``: the worker delivers to a platform, and its delivery
    state per event (delivered, retrying, dead) is kept for the timeline.
    ``ordered``: transient failures block the partition instead of moving on.
    """

    name: str
    topics: tuple[str, ...]
    handler: Handler
    ordered: bool = False
    tracks_delivery: bool = False

    @property
    def group_id(self) -> str:
        return f"ywtb.worker.{self.name}"


class _Stopping(Exception):
    """Shutdown arrived while an ordered worker waited for a platform: do not commit."""


def headers_of(record: ConsumerRecord[bytes, bytes]) -> dict[str, bytes]:
    return {name: value for name, value in record.headers}


class Worker:
    def __init__(self, spec: WorkerSpec, sessions: Sessions, settings: Settings) -> None:
        if not settings.kafka.bootstrap:
            raise ValueError("a worker needs YWTB_KAFKA_BOOTSTRAP")
        self.spec = spec
        self._sessions = sessions
        self._settings = settings
        self._policy = settings.worker
        self._bootstrap: str = settings.kafka.bootstrap
        self._stop = asyncio.Event()
        self.applied = 0

    async def apply(self, event: BaseCloudEvent, attempts: int = 1) -> bool:
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
                if self.spec.tracks_delivery:
                    await record_delivery(
                        session, self.spec.name, event, DeliveryStatus.DELIVERED, attempts, None
                    )
        except IntegrityError:
            return False  # applied meanwhile by another member of the group
        self.applied += 1
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Consume the topics and their retry companions until ``stop`` is set."""
        self._stop = stop
        producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, acks="all")
        main = self._consumer(self.spec.topics, self.spec.group_id)
        retries = self._consumer(
            tuple(retry_topic(t) for t in self.spec.topics), f"{self.spec.group_id}.retry"
        )
        await create_topics(self._settings.kafka, all_topics())
        with kafka_errors():
            await producer.start()
            await main.start()
            await retries.start()
        log.info("worker started", extra={"worker": self.spec.name, "topics": self.spec.topics})
        try:
            await asyncio.gather(
                self._loop(main, producer, from_retry=False),
                self._loop(retries, producer, from_retry=True),
            )
        finally:
            try:
                await main.stop()  # leaves the group
                await retries.stop()
            finally:
                await producer.stop()
            log.info("worker stopped", extra={"worker": self.spec.name, "applied": self.applied})

    def _consumer(self, topics: tuple[str, ...], group_id: str) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            *topics,
            bootstrap_servers=self._bootstrap,
            group_id=group_id,
            client_id=f"{self._settings.kafka.client_id}.{self.spec.name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )

    async def _loop(
        self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, *, from_retry: bool
    ) -> None:
        while not self._stop.is_set():
            batches = await consumer.getmany(
                timeout_ms=self._policy.poll_timeout_ms, max_records=self._policy.max_records
            )
            for tp, records in batches.items():
                for record in records:
                    try:
                        await self._process(record, producer, from_retry=from_retry)
                    except _Stopping:
                        return  # not committed: redelivered after the restart
                    await consumer.commit({tp: record.offset + 1})
                    if self._stop.is_set():
                        return

    async def _process(
        self, record: ConsumerRecord[bytes, bytes], producer: AIOKafkaProducer, *, from_retry: bool
    ) -> None:
        headers = headers_of(record)
        attempt, history = 1, []
        if from_retry:
            if headers.get(H_WORKER, b"").decode() != self.spec.name:
                return  # another worker's retry
            attempt = int(headers.get(H_ATTEMPT, b"1"))
            history = json.loads(headers.get(H_HISTORY, b"[]"))
            await self._until_due(float(headers.get(H_DUE_AT, b"0")))
        try:
            event = record_to_event(record)
        except Exception as exc:  # noqa: BLE001 - an undecodable message is a dead letter
            await self._forward(record, producer, exc, attempt, history, dead=True)
            return
        try:
            with consuming(event, self.spec.name):  # in the trace the event came with
                await self._apply_retrying(event, attempt)
        except TransientError as exc:
            if attempt > len(self._policy.retry_delays_s):
                await self._leave_to_sweeper(event, exc, attempt)
                return
            await self._forward(record, producer, exc, attempt, history, dead=False, event=event)
        except _Stopping:
            raise
        except Exception as exc:  # noqa: BLE001 - isolated: the message goes to the dead letters
            await self._forward(record, producer, exc, attempt, history, dead=True, event=event)

    async def _leave_to_sweeper(
        self, event: BaseCloudEvent, exc: TransientError, attempt: int
    ) -> None:
        """Out of retries for a transient failure: the work is still open in the store, where
        the sweeper (``gateway.sweeper``) finds it; a dead letter is for permanent rejections."""
        error = f"{type(exc).__name__}: {exc}"
        log.warning(
            "retries exhausted, left to the sweeper",
            extra={"worker": self.spec.name, "event_id": event.get_id(), "error": error},
        )
        if self.spec.tracks_delivery:
            async with transaction(self._sessions) as session:
                await record_delivery(
                    session, self.spec.name, event, DeliveryStatus.RETRYING, attempt, error
                )

    async def _until_due(self, due_at: float) -> None:
        delay = due_at - time.time()
        if delay > 0:
            await self._pause(delay)

    async def _apply_retrying(self, event: BaseCloudEvent, attempt: int) -> None:
        """Apply, retrying transient failures in place (forever, for an ordered worker)."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_never
            if self.spec.ordered
            else stop_after_attempt(self._policy.in_place_attempts),
            wait=wait_exponential(multiplier=0.2, max=self._policy.in_place_backoff_max_s),
            sleep=self._pause,
            before_sleep=lambda state: log.warning(
                "transient failure, retrying in place",
                extra={
                    "worker": self.spec.name,
                    "event_id": event.get_id(),
                    "try": state.attempt_number,
                    "error": str(state.outcome.exception() if state.outcome else ""),
                },
            ),
            reraise=True,
        )
        async for try_ in retrying:
            with try_:
                await self.apply(event, attempts=attempt)

    async def _pause(self, seconds: float) -> None:
        """Tenacity's sleep: cut short by shutdown, which must not commit the message."""
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            return
        raise _Stopping

    async def _forward(
        self,
        record: ConsumerRecord[bytes, bytes],
        producer: AIOKafkaProducer,
        exc: Exception,
        attempt: int,
        history: list[dict[str, Any]],
        *,
        dead: bool,
        event: BaseCloudEvent | None = None,
    ) -> None:
        """Send the message on to the retry topic, or to the dead letters."""
        original = headers_of(record)
        topic = original.get(H_TOPIC, record.topic.encode()).decode()
        error = f"{type(exc).__name__}: {exc}"
        history = [*history, {"attempt": attempt, "at": time.time(), "error": error}]
        headers = {k: v for k, v in original.items() if not k.startswith(WORKER_HEADER_PREFIX)}
        headers |= {
            H_WORKER: self.spec.name.encode(),
            H_ERROR: error.encode(),
            H_HISTORY: json.dumps(history, ensure_ascii=False).encode(),
            H_TOPIC: topic.encode(),
            H_PARTITION: original.get(H_PARTITION, str(record.partition).encode()),
            H_OFFSET: original.get(H_OFFSET, str(record.offset).encode()),
        }
        if dead:
            target, status = dead_letter_topic(topic), DeliveryStatus.DEAD
            headers[H_ATTEMPT] = str(attempt).encode()
            headers[H_DEAD_AT] = str(time.time()).encode()
            log.error(
                "dead-lettered",
                extra={
                    "worker": self.spec.name,
                    "topic": topic,
                    "error": error,
                    "attempts": attempt,
                },
            )
        else:
            target, status = retry_topic(topic), DeliveryStatus.RETRYING
            delay = self._policy.retry_delays_s[attempt - 1]
            headers[H_ATTEMPT] = str(attempt + 1).encode()
            headers[H_DUE_AT] = str(time.time() + delay).encode()
            log.warning(
                "sent to retry",
                extra={"worker": self.spec.name, "topic": topic, "error": error, "delay_s": delay},
            )
        with kafka_errors():
            await producer.send_and_wait(
                target, value=record.value, key=record.key, headers=list(headers.items())
            )
        if event is not None and self.spec.tracks_delivery:
            async with transaction(self._sessions) as session:
                await record_delivery(session, self.spec.name, event, status, attempt, error)
