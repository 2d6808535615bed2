"""Dead letters as a service: list, inspect and replay what workers could not deliver.

A dead letter keeps the original CloudEvent (headers and payload) and the
worker's notes (``ywtb_*`` headers: error, attempts, history). Replaying sends
the original message to ``<topic>.retry`` addressed to the worker that failed,
with its event id unchanged, so the inbox still turns a duplicate into a no-op.

The dead-letter topics are the record of what died; the store says what
became of it. A letter is *still dead* unless its worker has since applied the
event (the inbox row exists), a newer letter of the same event and worker
replaces it, or it was replayed after it died (the replay is in flight; if it
fails again, the worker writes a newer letter). Replays go through one
service for the CLI, the API and the console: a dry run shows what would be
sent where; the real one is paced (``dlq.replay_rate_per_s``), holds back a
letter already replayed ``dlq.max_replays`` times (the loop guard), and every
request is recorded with the outcome per event (``dead_letter_replays``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from sqlalchemy import func, select, update

from gateway.bus import kafka_consumer, kafka_errors, kafka_producer
from gateway.deliveries import DeliveryStatus
from gateway.settings import DeadLetterSettings, KafkaSettings, Settings
from gateway.store.db import Sessions, transaction
from gateway.store.models import (
    DeadLetterReplay,
    DeadLetterReplayItem,
    Delivery,
    InboxRow,
    utcnow,
)
from gateway.worker import (
    H_ATTEMPT,
    H_DEAD_AT,
    H_DUE_AT,
    H_ERROR,
    H_HISTORY,
    H_TOPIC,
    H_WORKER,
    WORKER_HEADER_PREFIX,
)
from schemas.errors import InvalidInput, NotFound, TransientError
from schemas.events import all_topics, retry_topic

_CHUNK = 500  # ids per IN (...) query


@dataclass(frozen=True)
class DeadLetter:
    """One message of a ``.dlq`` topic."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    headers: dict[str, bytes] = field(repr=False)

    def header(self, name: str) -> str:
        return self.headers.get(name, b"").decode("utf-8", "replace")

    @property
    def event_id(self) -> str:
        return self.header("ce_id")

    @property
    def worker(self) -> str:
        return self.header(H_WORKER)

    @property
    def original_topic(self) -> str:
        return self.header(H_TOPIC) or self.topic.removesuffix(".dlq")

    @property
    def application_id(self) -> str | None:
        return self.header("ce_partitionkey") or self.key

    @property
    def error(self) -> str:
        return self.header(H_ERROR)

    @property
    def dead_at(self) -> datetime | None:
        raw = self.header(H_DEAD_AT)
        return datetime.fromtimestamp(float(raw), UTC) if raw else None

    @property
    def replay_target(self) -> str:
        return retry_topic(self.original_topic)

    def summary(self) -> dict[str, Any]:
        dead_at = self.dead_at
        return {
            "event_id": self.event_id,
            "type": self.header("ce_type"),
            "key": self.key,
            "application_id": self.application_id,
            "worker": self.worker,
            "original_topic": self.original_topic,
            "attempts": int(self.header(H_ATTEMPT) or 0),
            "error": self.error,
            "dead_at": dead_at.strftime("%Y-%m-%dT%H:%M:%SZ") if dead_at else None,
            "at": f"{self.topic}/{self.partition}/{self.offset}",
        }

    def details(self) -> dict[str, Any]:
        payload: Any
        try:
            payload = json.loads(self.value)
        except ValueError:
            payload = self.value.decode("utf-8", "replace")
        return {
            **self.summary(),
            "history": json.loads(self.header(H_HISTORY) or "[]"),
            "headers": {k: v.decode("utf-8", "replace") for k, v in self.headers.items()},
            "payload": payload,
        }


class LetterState(StrEnum):
    DEAD = "dead"
    APPLIED = "applied"  # the worker has applied the event since (inbox row)
    REPLAYED = "replayed"  # replayed after it died: in flight, or superseded by a newer letter


@dataclass(frozen=True)
class Listed:
    """A dead letter and what has become of it."""

    letter: DeadLetter
    state: LetterState
    replays: int  # times it was sent back (real replays, not dry runs)

    def summary(self) -> dict[str, Any]:
        return {**self.letter.summary(), "state": self.state.value, "replays": self.replays}

    def details(self) -> dict[str, Any]:
        return {**self.letter.details(), "state": self.state.value, "replays": self.replays}


@dataclass(frozen=True)
class DeadLetterFilter:
    """What ``list`` shows; every field narrows, ``None`` does not."""

    topic: str | None = None  # the original topic, or its .dlq
    worker: str | None = None
    error: str | None = None  # text in the error, case-insensitive
    since: datetime | None = None  # died at or after
    until: datetime | None = None  # died before
    application_id: str | None = None
    include_resolved: bool = False  # also letters applied or replayed since

    def __post_init__(self) -> None:
        if self.since and self.until and self.since >= self.until:
            raise InvalidInput("until", "must be later than since")

    def matches(self, listed: Listed) -> bool:
        d = listed.letter
        dead_at = d.dead_at
        return (
            (self.include_resolved or listed.state is LetterState.DEAD)
            and (self.topic is None or self.topic in (d.original_topic, d.topic))
            and (self.worker is None or d.worker == self.worker)
            and (self.error is None or self.error.casefold() in d.error.casefold())
            and (self.since is None or (dead_at is not None and dead_at >= self.since))
            and (self.until is None or (dead_at is not None and dead_at < self.until))
            and (self.application_id is None or d.application_id == self.application_id)
        )


class ReplayOutcome(StrEnum):
    WOULD_SEND = "would_send"  # dry run
    SENT = "sent"
    HELD_BACK = "held_back"  # the loop guard: replayed max_replays times already
    NOT_DEAD = "not_dead"  # applied or already replayed since it died
    NOT_FOUND = "not_found"
    FAILED = "failed"  # the broker did not take it


@dataclass(frozen=True)
class ReplayItem:
    event_id: str
    outcome: ReplayOutcome
    worker: str | None = None
    type: str | None = None
    application_id: str | None = None
    original_topic: str | None = None
    target_topic: str | None = None
    replays_before: int = 0
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "worker": self.worker,
            "type": self.type,
            "application_id": self.application_id,
            "original_topic": self.original_topic,
            "target_topic": self.target_topic,
            "outcome": self.outcome.value,
            "replays_before": self.replays_before,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class ReplayReport:
    replay_id: int
    actor: str
    requested_at: datetime
    dry_run: bool
    items: list[ReplayItem]

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for item in self.items:
            counts[item.outcome.value] = counts.get(item.outcome.value, 0) + 1
        return counts

    def as_dict(self) -> dict[str, Any]:
        return {
            "replay_id": self.replay_id,
            "actor": self.actor,
            "requested_at": self.requested_at.isoformat(),
            "dry_run": self.dry_run,
            "counts": self.counts(),
            "items": [item.as_dict() for item in self.items],
        }


async def read_dead_letters(
    settings: KafkaSettings, *, timeout_s: float = 10.0
) -> list[DeadLetter]:
    """Every message in every dead-letter topic, oldest first per partition.

    Reads each partition to its high watermark (learnt from a fetch, which is
    right on every Kafka-compatible broker) rather than waiting for silence.
    """
    dead_topics = [t for t in all_topics() if t.endswith(".dlq")]
    consumer = kafka_consumer(settings, group_id=None)
    letters: list[DeadLetter] = []
    with kafka_errors():
        await consumer.start()
        try:
            partitions = [
                TopicPartition(topic, p)
                for topic in dead_topics
                for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            if not partitions:
                # No dead-letter topic yet. Let the consumer's background tasks start, or
                # stopping it at once raises CancelledError out of aiokafka.
                await asyncio.sleep(0.05)
                return letters
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            while True:
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    letters.extend(
                        DeadLetter(
                            topic=r.topic,
                            partition=r.partition,
                            offset=r.offset,
                            key=r.key.decode() if r.key else None,
                            value=r.value or b"",
                            headers=dict(r.headers),
                        )
                        for r in records
                    )
                positions = {tp: await consumer.position(tp) for tp in partitions}
                ends = {tp: consumer.highwater(tp) for tp in partitions}
                if all(end is not None and positions[tp] >= end for tp, end in ends.items()):
                    break
                if loop.time() > deadline:
                    raise TransientError(
                        f"dead-letter topics not read to their end within {timeout_s} s"
                    )
        finally:
            await consumer.stop()
    return letters


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


class DeadLetters:
    """List, inspect and replay dead letters (the CLI, the API and the console use this)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        sessions: Sessions,
        settings: DeadLetterSettings,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kafka = kafka
        self._sessions = sessions
        self._settings = settings
        self._sleep = sleep
        self._clock = clock
        self._pace = asyncio.Lock()
        self._next_send = 0.0

    async def _states(self, letters: list[DeadLetter]) -> list[Listed]:
        """Each letter with its state: newest per (worker, event), applied, replayed since."""
        event_ids = sorted({d.event_id for d in letters})
        applied: set[tuple[str, str]] = set()
        sent: dict[tuple[str, str], list[datetime]] = {}
        async with self._sessions() as session:
            for chunk in _chunks(event_ids):
                rows = await session.execute(
                    select(InboxRow.consumer, InboxRow.event_id).where(InboxRow.event_id.in_(chunk))
                )
                applied.update((consumer, event_id) for consumer, event_id in rows)
                replays = await session.execute(
                    select(
                        DeadLetterReplayItem.worker,
                        DeadLetterReplayItem.event_id,
                        DeadLetterReplayItem.at,
                    ).where(
                        DeadLetterReplayItem.event_id.in_(chunk),
                        DeadLetterReplayItem.outcome == ReplayOutcome.SENT.value,
                    )
                )
                for worker, event_id, at in replays:
                    sent.setdefault((worker or "", event_id), []).append(at)
        newest: dict[tuple[str, str], DeadLetter] = {}
        for d in letters:
            key = (d.worker, d.event_id)
            current = newest.get(key)
            if current is None or _dead_at(d) >= _dead_at(current):
                newest[key] = d
        listed = []
        for d in letters:
            key = (d.worker, d.event_id)
            times = sent.get(key, [])
            if key in applied:
                state = LetterState.APPLIED
            elif newest[key] is not d or any(at >= _dead_at(d) for at in times):
                state = LetterState.REPLAYED
            else:
                state = LetterState.DEAD
            listed.append(Listed(d, state, len(times)))
        return listed

    async def read_all(self) -> list[Listed]:
        letters = await read_dead_letters(self._kafka, timeout_s=self._settings.read_timeout_s)
        return await self._states(letters)

    async def find(self, filters: DeadLetterFilter | None = None) -> list[Listed]:
        """Dead letters matching ``filters`` (by default: the still dead ones), newest first."""
        filters = filters or DeadLetterFilter()
        chosen = [d for d in await self.read_all() if filters.matches(d)]
        return sorted(chosen, key=lambda d: _dead_at(d.letter), reverse=True)

    async def get(self, event_id: str, worker: str | None = None) -> Listed:
        """The newest dead letter of ``event_id`` (of ``worker``, when given)."""
        matching = [
            d
            for d in await self.read_all()
            if d.letter.event_id == event_id and worker in (None, d.letter.worker)
        ]
        if not matching:
            raise NotFound(f"no dead letter with event id {event_id}")
        return max(matching, key=lambda d: _dead_at(d.letter))

    async def counts_by_topic(self) -> dict[str, int]:
        """Still-dead letters per original topic."""
        counts: dict[str, int] = {}
        for d in await self.find():
            counts[d.letter.original_topic] = counts.get(d.letter.original_topic, 0) + 1
        return dict(sorted(counts.items()))

    async def replay(
        self,
        event_ids: list[str],
        *,
        dry_run: bool,
        actor: str,
        worker: str | None = None,
    ) -> ReplayReport:
        """Send the still-dead letters of ``event_ids`` back to their workers (or say what
        would be sent, with ``dry_run``); recorded, paced and loop-guarded."""
        wanted: list[str] = list(dict.fromkeys(event_ids))
        if not wanted:
            raise InvalidInput("event_ids", "name at least one event id")
        if len(wanted) > self._settings.max_batch:
            raise InvalidInput(
                "event_ids", f"at most {self._settings.max_batch} event ids per replay"
            )
        chosen = set(wanted)
        listed = [
            d
            for d in await self.read_all()
            if d.letter.event_id in chosen and worker in (None, d.letter.worker)
        ]
        plan: list[tuple[ReplayItem, DeadLetter | None]] = []
        for event_id in wanted:
            mine = [d for d in listed if d.letter.event_id == event_id]
            if not mine:
                plan.append((ReplayItem(event_id, ReplayOutcome.NOT_FOUND), None))
                continue
            dead = [d for d in mine if d.state is LetterState.DEAD]
            if not dead:
                newest = max(mine, key=lambda d: _dead_at(d.letter))
                detail = f"{newest.state.value} since it died"
                plan.append((_item(newest, ReplayOutcome.NOT_DEAD, detail), None))
                continue
            for d in dead:
                if d.replays >= self._settings.max_replays:
                    detail = f"replayed {d.replays} times without success (loop guard)"
                    plan.append((_item(d, ReplayOutcome.HELD_BACK, detail), None))
                elif dry_run:
                    plan.append((_item(d, ReplayOutcome.WOULD_SEND), None))
                else:
                    plan.append((_item(d, ReplayOutcome.SENT), d.letter))

        requested_at = utcnow()
        async with transaction(self._sessions) as session:
            replay = DeadLetterReplay(actor=actor, requested_at=requested_at, dry_run=dry_run)
            session.add(replay)
            await session.flush()
            replay_id = replay.id
        items: list[ReplayItem] = []
        producer: AIOKafkaProducer | None = None  # started when the first letter is sent
        started: bool | str = False  # True, or why the producer could not start
        try:
            for item, letter in plan:
                at = utcnow()
                if letter is not None and producer is None:
                    producer = kafka_producer(self._kafka)
                    started = await _start(producer)
                if letter is not None and started is not True:
                    item = replace(item, outcome=ReplayOutcome.FAILED, detail=str(started))
                elif letter is not None and producer is not None:
                    await self._paced()
                    at = utcnow()  # before the send: a letter the replay produces is newer
                    item = await self._send(producer, item, letter)
                await self._record(replay_id, item, at)
                items.append(item)
        finally:
            if producer is not None and started is True:
                await producer.stop()
        return ReplayReport(replay_id, actor, requested_at, dry_run, items)

    async def _send(
        self, producer: AIOKafkaProducer, item: ReplayItem, letter: DeadLetter
    ) -> ReplayItem:
        try:
            with kafka_errors():
                await send_back(producer, letter)
        except TransientError as exc:
            return replace(item, outcome=ReplayOutcome.FAILED, detail=exc.detail)
        return item

    async def _paced(self) -> None:
        """At most ``replay_rate_per_s`` sends per second from this process."""
        async with self._pace:
            now = self._clock()
            if self._next_send > now:
                await self._sleep(self._next_send - now)
                now = self._next_send
            self._next_send = now + 1.0 / self._settings.replay_rate_per_s

    async def _record(self, replay_id: int, item: ReplayItem, at: datetime) -> None:
        async with transaction(self._sessions) as session:
            session.add(
                DeadLetterReplayItem(
                    replay_id=replay_id,
                    event_id=item.event_id,
                    worker=item.worker,
                    outcome=item.outcome.value,
                    target_topic=item.target_topic,
                    detail=item.detail[:1000] if item.detail else None,
                    at=at,
                )
            )
            if item.outcome is ReplayOutcome.SENT and item.worker:
                # Back in the retry path: the delivery is no longer dead until it fails again.
                await session.execute(
                    update(Delivery)
                    .where(
                        Delivery.worker == item.worker,
                        Delivery.event_id == item.event_id,
                        Delivery.status == DeliveryStatus.DEAD.value,
                    )
                    .values(status=DeliveryStatus.RETRYING.value, updated_at=utcnow())
                )

    async def history(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest replay requests, newest first, with their outcome counts."""
        async with self._sessions() as session:
            replays = (
                await session.scalars(
                    select(DeadLetterReplay).order_by(DeadLetterReplay.id.desc()).limit(limit)
                )
            ).all()
            ids = [r.id for r in replays]
            counts: dict[int, dict[str, int]] = {}
            if ids:
                rows = await session.execute(
                    select(
                        DeadLetterReplayItem.replay_id,
                        DeadLetterReplayItem.outcome,
                        func.count(),
                    )
                    .where(DeadLetterReplayItem.replay_id.in_(ids))
                    .group_by(DeadLetterReplayItem.replay_id, DeadLetterReplayItem.outcome)
                )
                for replay_id, outcome, n in rows:
                    counts.setdefault(replay_id, {})[outcome] = int(n)
        return [
            {
                "replay_id": r.id,
                "actor": r.actor,
                "requested_at": r.requested_at.isoformat(),
                "dry_run": r.dry_run,
                "counts": counts.get(r.id, {}),
            }
            for r in replays
        ]


async def _start(producer: AIOKafkaProducer) -> bool | str:
    """Start ``producer``: True, or the reason it could not (each send is then ``failed``)."""
    try:
        with kafka_errors():
            await producer.start()
    except TransientError as exc:
        await producer.stop()
        return exc.detail
    return True


def _dead_at(letter: DeadLetter) -> datetime:
    return letter.dead_at or datetime.min.replace(tzinfo=UTC)


def _item(listed: Listed, outcome: ReplayOutcome, detail: str | None = None) -> ReplayItem:
    d = listed.letter
    return ReplayItem(
        event_id=d.event_id,
        outcome=outcome,
        worker=d.worker,
        type=d.header("ce_type"),
        application_id=d.application_id,
        original_topic=d.original_topic,
        target_topic=d.replay_target,
        replays_before=listed.replays,
        detail=detail,
    )


async def send_back(producer: AIOKafkaProducer, letter: DeadLetter) -> str:
    """Send the original message back to its worker through the retry topic; return the topic."""
    original = {k: v for k, v in letter.headers.items() if not k.startswith(WORKER_HEADER_PREFIX)}
    headers = {
        **original,
        H_WORKER: letter.worker.encode(),
        H_TOPIC: letter.original_topic.encode(),
        H_ATTEMPT: b"1",
        H_DUE_AT: str(time.time()).encode(),
        H_HISTORY: letter.headers.get(H_HISTORY, b"[]"),
    }
    target = letter.replay_target
    await producer.send_and_wait(
        target,
        value=letter.value,
        key=letter.key.encode() if letter.key else None,
        headers=list(headers.items()),
    )
    return target


def run_dlq_command(
    settings: Settings,
    action: str,
    event_ids: list[str],
    *,
    actor: str,
    filters: DeadLetterFilter | None = None,
    dry_run: bool = False,
) -> list[dict[str, Any]]:
    """``ywtb dlq list|show|replay``: what to print, one dict per line."""
    from gateway.store.db import open_store

    async def go() -> list[dict[str, Any]]:
        engine, sessions = await open_store(settings.store)
        try:
            service = DeadLetters(settings.kafka, sessions, settings.dlq)
            if action == "list":
                return [d.summary() for d in await service.find(filters)]
            worker = filters.worker if filters else None
            if action == "show":
                return [(await service.get(e, worker)).details() for e in event_ids]
            report = await service.replay(event_ids, dry_run=dry_run, actor=actor, worker=worker)
            return [
                {"replay_id": report.replay_id, "dry_run": dry_run, **item.as_dict()}
                for item in report.items
            ]
        finally:
            await engine.dispose()

    return asyncio.run(go())
