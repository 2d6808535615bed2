"""Kafka workers: one consumer group per worker, an inbox for exactly-once effects.

For each message: decode the CloudEvent; let the handler do its I/O; then, in
one transaction, record the event id in the inbox and apply the handler's
effect (an id already there is skipped); then commit the offset. A crash
between the effect and the commit redelivers the message, and the inbox turns
that into a no-op. ``stop`` (SIGTERM) lets the message in hand finish,
commits, and leaves the group; a message it did not finish is not committed.

Failures (Camel's redelivery policy, with the store as the last resort):

- ``StoreUnavailable`` (the database is briefly away): retried in place with
  back-off until the store is back; never forwarded, never committed meanwhile.
- Other ``TransientError``: retried in place (``in_place_attempts``), then sent
  to ``<topic>.retry`` with a due time and attempt count in headers and retried
  from there after each of ``retry_delays_s``. After the last round the
  delivery is recorded ``retrying`` in the store, with its attempts and real
  cause, and the message is committed: the store sweeper drives that work
  again. An *ordered* worker (status pushes) instead blocks its partition and
  retries until the platform is back, so later messages of the same key never
  overtake an earlier one; it records its attempts as it goes.
- ``PermanentError``, an unexpected error, or an undecodable message: to
  ``<topic>.dlq`` at once, and recorded ``dead`` with its reason.

A dead letter keeps the original headers and payload and adds the error, the
attempt history and the worker's name; ``ywtb dlq replay`` sends it back
through ``<topic>.retry`` to that worker, with its event id unchanged.

Broker loss: each of a worker's two loops (its topics, and their ``.retry``
companions) holds one Kafka session (consumer and producer). Any Kafka
failure (unreachable broker, failed commit, a new broker without the topics)
ends the session; the loop backs off, recreates the topics, rejoins the group
and resumes from the offsets the broker has. An outage is logged once, when
it starts, and once when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from cloudevents.core.base import BaseCloudEvent
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from gateway.bus import (
    create_topics,
    kafka_consumer,
    kafka_errors,
    kafka_producer,
    record_to_event,
    started,
)
from gateway.deliveries import DeliveryRef, DeliveryStatus, record_delivery
from gateway.settings import Settings
from gateway.store.db import Sessions, store_errors, transaction
from gateway.store.models import InboxRow, utcnow
from gateway.supervise import Beat, LoopBody, Loops, supervise, wait_or_stop
from gateway.tracing import consuming
from schemas.errors import BrokerUnavailable, ConnectorError, StoreUnavailable, TransientError
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
    Every worker records a failure (retrying, dead) and the success that follows one.
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
    """Shutdown arrived while a message waited (for a platform, the store or its due time).

    The message is not committed: it is redelivered after the restart.
    """


def headers_of(record: ConsumerRecord[bytes, bytes]) -> dict[str, bytes]:
    return {name: value for name, value in record.headers}


def _retry_state(headers: dict[str, bytes]) -> tuple[int, list[dict[str, Any]], float]:
    """Round, history and due time of a message from a retry topic (ValueError if unreadable)."""
    history = json.loads(headers.get(H_HISTORY, b"[]"))
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise ValueError(f"{H_HISTORY} is not a list of rounds")
    _tries_in(history)
    return int(headers.get(H_ATTEMPT, b"1")), history, float(headers.get(H_DUE_AT, b"0"))


def _tries_in(history: list[dict[str, Any]]) -> int:
    """Tries made in the rounds of ``history`` (a round from before tries were counted: one)."""
    return sum(int(round_.get("tries", 1)) for round_ in history)


async def _unless_stopped(
    poll: Awaitable[dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]], stop: asyncio.Event
) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
    """``poll``'s records, or none if ``stop`` is set first (a poll waits out a rebalance)."""
    polling = asyncio.ensure_future(poll)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({polling, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not polling.done():
            polling.cancel()
    if polling.done() and not polling.cancelled():
        return polling.result()
    return {}


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


@dataclass
class _Tries:
    """The tries of one message so far (over every round) and the real cause of its failures.

    An open circuit is how the breaker fails fast, not why the platform failed:
    the cause it replaces is kept.
    """

    count: int
    recorded: int = 0
    """How many of ``count`` the delivery record already holds."""
    cause: str | None = None
    recorded_at: float = field(default_factory=time.monotonic)

    @classmethod
    def after(cls, history: list[dict[str, Any]]) -> _Tries:
        """The tries of the rounds in ``history`` (each recorded when its round ended) and the
        cause of their failures."""
        count = _tries_in(history)
        cause = str(history[-1].get("error")) if history else None
        return cls(count=count, recorded=count, cause=cause)

    def was_recorded(self) -> None:
        self.recorded, self.recorded_at = self.count, time.monotonic()

    def failed(self, exc: BaseException) -> None:
        self.count += 1
        circuit_open = isinstance(exc, ConnectorError) and "circuit" in exc.context
        if not (circuit_open and self.cause):
            self.cause = describe(exc)


class _Outage:
    """One broker outage of one loop: logged when it starts and when it ends, not per try;
    the pause before each reconnection doubles up to ``max_backoff_s``."""

    _FIRST_BACKOFF_S = 0.2

    def __init__(self, loop: str, max_backoff_s: float) -> None:
        self.loop = loop
        self.since: float | None = None
        self.failures = 0
        self._max_backoff_s = max_backoff_s
        self._backoff_s = self._FIRST_BACKOFF_S

    def pause_s(self) -> float:
        """How long to wait before the next try (with jitter)."""
        pause, self._backoff_s = self._backoff_s, min(self._backoff_s * 2, self._max_backoff_s)
        return pause * (1 + random.random() / 2)

    def failed(self, exc: BrokerUnavailable) -> None:
        self.failures += 1
        if self.since is None:
            self.since = time.monotonic()
            log.warning(
                "broker unavailable, reconnecting", extra={"loop": self.loop, "error": exc.detail}
            )

    def over(self) -> None:
        if self.since is not None:
            log.info(
                "broker back",
                extra={
                    "loop": self.loop,
                    "outage_s": round(time.monotonic() - self.since, 1),
                    "failures": self.failures,
                },
            )
        self.since, self.failures, self._backoff_s = None, 0, self._FIRST_BACKOFF_S


class Worker:
    def __init__(self, spec: WorkerSpec, sessions: Sessions, settings: Settings) -> None:
        if not settings.kafka.bootstrap:
            raise ValueError("a worker needs YWTB_KAFKA_BOOTSTRAP")
        self.spec = spec
        self._sessions = sessions
        self._settings = settings
        self._kafka = settings.kafka
        self._policy = settings.worker
        self.applied = 0

    # -- the effect of one event -------------------------------------------------------------

    async def apply(
        self, event: BaseCloudEvent, attempts: int = 1, *, after_failure: bool = False
    ) -> bool:
        """Apply ``event`` once; return False if it was applied before or needs nothing.

        ``attempts``: the tries the delivery record does not hold yet, this one
        included. The delivery is recorded if the worker tracks deliveries or a
        failure of this event came before (``after_failure``).
        """
        key = (self.spec.name, event.get_id())
        with store_errors():
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
                    if self.spec.tracks_delivery or after_failure:
                        await record_delivery(
                            session, self.spec.name, event, DeliveryStatus.DELIVERED, attempts
                        )
            except IntegrityError:
                return False  # applied meanwhile by another member of the group
        self.applied += 1
        return True

    # -- the loops ---------------------------------------------------------------------------

    def loops(self) -> dict[str, LoopBody]:
        """The worker's loops, for ``supervise``: its topics, and their retry companions."""
        return {
            f"worker.{self.spec.name}": partial(self._consume, from_retry=False),
            f"worker.{self.spec.name}.retry": partial(self._consume, from_retry=True),
        }

    async def run(self, stop: asyncio.Event, loops: Loops | None = None) -> None:
        """Run both loops, each supervised, until ``stop`` is set."""
        registry = loops if loops is not None else Loops()
        await asyncio.gather(
            *(supervise(name, body, stop, registry) for name, body in self.loops().items())
        )

    async def _consume(self, stop: asyncio.Event, beat: Beat, *, from_retry: bool) -> None:
        """One loop: a Kafka session, and a new one (after a back-off) whenever Kafka fails."""
        topics = tuple(map(retry_topic, self.spec.topics)) if from_retry else self.spec.topics
        group = f"{self.spec.group_id}.retry" if from_retry else self.spec.group_id
        loop = f"worker.{self.spec.name}{'.retry' if from_retry else ''}"
        outage = _Outage(loop, self._policy.reconnect_backoff_max_s)
        while not stop.is_set():
            beat()
            try:
                await create_topics(self._kafka, all_topics())
                producer = kafka_producer(self._kafka)
                consumer = kafka_consumer(
                    self._kafka,
                    group_id=group,
                    client_id=f"{self._kafka.client_id}.{self.spec.name}",
                )
                async with started(producer, consumer, settings=self._kafka):
                    consumer.subscribe(list(topics))
                    log.info("worker consuming", extra={"worker": self.spec.name, "topics": topics})
                    await self._poll(consumer, producer, stop, beat, outage, from_retry=from_retry)
            except BrokerUnavailable as exc:
                outage.failed(exc)
                await wait_or_stop(stop, outage.pause_s())
        log.info("worker stopped", extra={"worker": self.spec.name, "applied": self.applied})

    async def _poll(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        stop: asyncio.Event,
        beat: Beat,
        outage: _Outage,
        *,
        from_retry: bool,
    ) -> None:
        """Fetch, process and commit until ``stop``; raise ``BrokerUnavailable`` if Kafka fails."""
        poll_s = self._policy.poll_timeout_ms / 1000
        checked_at = time.monotonic()
        while not stop.is_set():
            beat()
            batches = {}
            try:
                async with asyncio.timeout(poll_s + self._kafka.request_timeout_s):
                    with kafka_errors():
                        batches = await _unless_stopped(
                            consumer.getmany(
                                timeout_ms=self._policy.poll_timeout_ms,
                                max_records=self._policy.max_records,
                            ),
                            stop,
                        )
            except TimeoutError:
                # A poll waits while the group rebalances, which may take a session timeout
                # or more: no failure while the broker answers, as the check now tells.
                checked_at = 0.0
            if stop.is_set():
                return  # what the poll brought is not in hand yet: nothing to commit
            if time.monotonic() - checked_at >= self._policy.broker_check_s:
                await self._check_broker(producer, consumer.subscription())
                checked_at = time.monotonic()
                outage.over()
            elif batches:
                outage.over()
            for tp, records in batches.items():
                for record in records:
                    try:
                        await self._process(record, producer, stop, beat, from_retry=from_retry)
                    except _Stopping:
                        return  # not committed: redelivered after the restart
                    await self._commit(consumer, tp, record.offset + 1)
                    if stop.is_set():
                        return

    async def _check_broker(self, producer: AIOKafkaProducer, topics: set[str]) -> None:
        """Raise ``BrokerUnavailable`` unless the broker answers and still has our topics.

        A consumer waits quietly for a broker that is gone; a new, empty broker
        has neither the topics nor the group: both mean starting a new session.
        """
        with kafka_errors():
            async with asyncio.timeout(self._kafka.request_timeout_s):
                cluster = await producer.client.fetch_all_metadata()
        missing = sorted(set(topics) - set(cluster.topics()))
        if missing:
            raise BrokerUnavailable(f"Kafka: topics missing on the broker: {', '.join(missing)}")

    async def _commit(self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
        """Commit ``offset``; a failure (rebalance, lost coordinator, no broker) ends the session.

        The message was applied (or forwarded): redelivered, the inbox makes it a no-op.
        """
        with kafka_errors():
            async with asyncio.timeout(self._kafka.request_timeout_s):
                await consumer.commit({tp: offset})

    # -- one message -------------------------------------------------------------------------

    async def _process(
        self,
        record: ConsumerRecord[bytes, bytes],
        producer: AIOKafkaProducer,
        stop: asyncio.Event,
        beat: Beat,
        *,
        from_retry: bool,
    ) -> None:
        headers = headers_of(record)
        if from_retry and headers.get(H_WORKER, b"").decode() != self.spec.name:
            return  # another worker's retry
        try:
            round_, history, due_at = _retry_state(headers) if from_retry else (1, [], 0.0)
            event = record_to_event(record)
        except Exception as exc:  # noqa: BLE001 - an unreadable message is a dead letter
            tries = _Tries(count=0)
            tries.failed(exc)
            await self._forward(record, producer, tries, 1, [], stop, beat, dead=True)
            return
        await self._pause(due_at - time.time(), stop, beat)
        tries = _Tries.after(history)
        try:
            with consuming(event, self.spec.name):  # in the trace the event came with
                await self._apply_retrying(event, tries, stop, beat)
        except _Stopping:
            raise
        except TransientError:
            if round_ > len(self._policy.retry_delays_s):
                await self._leave_to_sweeper(event, tries, stop, beat)
            else:
                await self._forward(
                    record, producer, tries, round_, history, stop, beat, dead=False, event=event
                )
        except Exception as exc:  # noqa: BLE001 - isolated: the message goes to the dead letters
            tries.failed(exc)
            await self._forward(
                record, producer, tries, round_, history, stop, beat, dead=True, event=event
            )

    async def _apply_retrying(
        self, event: BaseCloudEvent, tries: _Tries, stop: asyncio.Event, beat: Beat
    ) -> None:
        """Apply, retrying in place: the store until it is back, other transient failures
        ``in_place_attempts`` times (until the platform is back, for an ordered worker)."""
        first_try = tries.count

        def give_up(state: RetryCallState) -> bool:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, StoreUnavailable) or self.spec.ordered:
                return False
            return state.attempt_number >= self._policy.in_place_attempts

        async def after_failure(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            assert exc is not None
            tries.failed(exc)
            if tries.count == first_try + 1:
                log.warning(
                    "transient failure, retrying in place",
                    extra={
                        "worker": self.spec.name,
                        "event_id": event.get_id(),
                        "error": tries.cause,
                    },
                )
            if time.monotonic() - tries.recorded_at >= self._policy.record_every_s:
                await self._note_retrying(event, tries)

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TransientError),
            stop=give_up,
            wait=wait_exponential(multiplier=0.2, max=self._policy.in_place_backoff_max_s),
            sleep=lambda seconds: self._pause(seconds, stop, beat),
            after=after_failure,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self.apply(
                    event, attempts=tries.count + 1 - tries.recorded, after_failure=tries.count > 0
                )

    async def _note_retrying(self, event: BaseCloudEvent, tries: _Tries) -> None:
        """Record how a message waiting out an outage stands (skipped while the store is away)."""
        tries.recorded_at = time.monotonic()  # at most once every record_every_s, recorded or not
        log.warning(
            "still retrying in place",
            extra={
                "worker": self.spec.name,
                "event_id": event.get_id(),
                "attempts": tries.count,
                "error": tries.cause,
            },
        )
        with contextlib.suppress(StoreUnavailable):  # the store is away: nowhere to record it
            await self._record(event, DeliveryStatus.RETRYING, tries)

    async def _record(
        self, what: BaseCloudEvent | DeliveryRef, status: DeliveryStatus, tries: _Tries
    ) -> None:
        with store_errors():
            async with transaction(self._sessions) as session:
                new_tries = tries.count - tries.recorded
                await record_delivery(session, self.spec.name, what, status, new_tries, tries.cause)
        tries.was_recorded()

    async def _record_retrying_store(
        self,
        what: BaseCloudEvent | DeliveryRef,
        status: DeliveryStatus,
        tries: _Tries,
        stop: asyncio.Event,
        beat: Beat,
    ) -> None:
        """Record a delivery's state, waiting for the store if it is away."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(StoreUnavailable),
            wait=wait_exponential(multiplier=0.2, max=self._policy.in_place_backoff_max_s),
            sleep=lambda seconds: self._pause(seconds, stop, beat),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._record(what, status, tries)

    async def _leave_to_sweeper(
        self, event: BaseCloudEvent, tries: _Tries, stop: asyncio.Event, beat: Beat
    ) -> None:
        """After the last round: the store says what is open, and the sweeper drives it again."""
        await self._record_retrying_store(event, DeliveryStatus.RETRYING, tries, stop, beat)
        log.warning(
            "retries exhausted, left to the sweeper",
            extra={
                "worker": self.spec.name,
                "event_id": event.get_id(),
                "attempts": tries.count,
                "error": tries.cause,
            },
        )

    async def _pause(self, seconds: float, stop: asyncio.Event, beat: Beat) -> None:
        """Wait ``seconds`` (beating: waiting is progress); shutdown cuts it short with
        ``_Stopping``, so the message in hand is not committed."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            beat()
            await wait_or_stop(stop, min(left, 1.0))
            if stop.is_set():
                raise _Stopping
        beat()

    async def _forward(
        self,
        record: ConsumerRecord[bytes, bytes],
        producer: AIOKafkaProducer,
        tries: _Tries,
        round_: int,
        history: list[dict[str, Any]],
        stop: asyncio.Event,
        beat: Beat,
        *,
        dead: bool,
        event: BaseCloudEvent | None = None,
    ) -> None:
        """Record the failure, then send the message on to the retry topic or the dead letters."""
        original = headers_of(record)
        topic = original.get(H_TOPIC, record.topic.encode()).decode()
        error = tries.cause or "unknown"
        tries_this_round = tries.count - _tries_in(history)
        history = [
            *history,
            {"attempt": round_, "at": time.time(), "error": error, "tries": tries_this_round},
        ]
        headers = {k: v for k, v in original.items() if not k.startswith(WORKER_HEADER_PREFIX)}
        headers |= {
            H_WORKER: self.spec.name.encode(),
            H_ERROR: error.encode(),
            H_HISTORY: json.dumps(history, ensure_ascii=False).encode(),
            H_TOPIC: topic.encode(),
            H_PARTITION: original.get(H_PARTITION, str(record.partition).encode()),
            H_OFFSET: original.get(H_OFFSET, str(record.offset).encode()),
        }
        what = event if event is not None else DeliveryRef.of_record(record)
        if dead:
            target, status = dead_letter_topic(topic), DeliveryStatus.DEAD
            headers[H_ATTEMPT] = str(round_).encode()
            headers[H_DEAD_AT] = str(time.time()).encode()
            log.error(
                "dead-lettered",
                extra={
                    "worker": self.spec.name,
                    "topic": topic,
                    "error": error,
                    "attempts": tries.count,
                },
            )
        else:
            target, status = retry_topic(topic), DeliveryStatus.RETRYING
            delay = self._policy.retry_delays_s[round_ - 1]
            headers[H_ATTEMPT] = str(round_ + 1).encode()
            headers[H_DUE_AT] = str(time.time() + delay).encode()
            log.warning(
                "sent to retry",
                extra={"worker": self.spec.name, "topic": topic, "error": error, "delay_s": delay},
            )
        await self._record_retrying_store(what, status, tries, stop, beat)
        with kafka_errors():
            async with asyncio.timeout(self._kafka.request_timeout_s):
                await producer.send_and_wait(
                    target, value=record.value, key=record.key, headers=list(headers.items())
                )
