"""The sweeper: the store, not Kafka, is the source of truth for unfinished work.

A message can run out of retries while a platform is down for longer than the
workers' retry budget; the work it stood for is still open in the store. Each
sweep finds that work there:

- applications still ``evidence_pending`` (the ``evidence`` worker's
  ``application.received``),
- permits still ``requested`` (the ``permits`` worker's ``permit.requested``),
- deliveries ``retrying`` (the delivering worker's event), and stage changes of
  a 一网通办 case whose push has no delivery at all (``ywtb-status``),

each older than ``grace_s``, and drives it again through the same code path
the workers use: the event is rebuilt from its outbox row and applied by the
worker's handler and the inbox-protected ``Worker.apply``, so an item a worker
finishes meanwhile is not applied twice.

Every item has a row in ``sweep_items`` with its back-off (``attempts``,
``next_attempt_at``). A sweeper drives an item only after claiming it with a
conditional UPDATE of its lease (as relays claim lanes), so several replicas
never drive one item at once, and a sweeper that dies holding a lease only
delays the item until the lease ends. Work whose platform's circuit breaker is
open is skipped; the breaker's half-open trial does the probing. A permanent
rejection marks the item ``dead`` (and its delivery, where one is tracked):
ops decide, as with a dead letter.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import kafka as ce_kafka
from sqlalchemy import delete, select, update

from adapters.registry import filling
from adapters.resilience import BreakerState
from gateway.bootstrap import Container
from gateway.bus import JSON_FORMAT, outbox_to_message
from gateway.deliveries import PUSHER, DeliveryStatus, record_delivery
from gateway.store.db import conflict_insert, transaction
from gateway.store.models import (
    Application,
    ApplicationEvidence,
    Case,
    Delivery,
    OutboxRow,
    Permit,
    StageChange,
    SweepItem,
    utcnow,
)
from gateway.supervise import Beat, LoopBody, periodic
from gateway.worker import (
    H_ATTEMPT,
    H_DEAD_AT,
    H_ERROR,
    H_HISTORY,
    H_TOPIC,
    H_WORKER,
    Worker,
)
from gateway.workers import WORKERS
from schemas.applications import ApplicationStatus, EvidenceStatus
from schemas.errors import BrokerUnavailable, PermanentError, TransientError
from schemas.events import ApplicationEvent, PermitEvent, dead_letter_topic
from schemas.permits import PermitStatus

log = logging.getLogger(__name__)

Item = tuple[str, str]
"""(worker, event id): the event to drive through that worker's handler."""


@dataclass(frozen=True)
class OpenWork:
    platforms: tuple[str, ...]  # whose breakers decide whether to try now
    since: datetime  # when the work was last touched (the grace period counts from here)


#: The platforms a worker's deliveries depend on (their breakers), by the port it calls;
#: evidence: per item (an evidence kind is named as its platform).
WORKER_PLATFORMS: dict[str, tuple[str, ...]] = {
    worker: (filling(role).name,)
    for worker, role in (
        ("permits", "permit_authority"),
        ("marketing", "marketing"),
        ("ywtb-status", "case_status"),
    )
}
OPEN, DEAD = "open", "dead"


def outbox_event(row: OutboxRow) -> BaseCloudEvent:
    """The CloudEvent an outbox row was published as (what a worker consumed)."""
    return ce_kafka.from_binary(outbox_to_message(row), JSON_FORMAT)


class Sweeper:
    def __init__(self, container: Container) -> None:
        self._container = container
        self._sessions = container.sessions
        self._settings = container.settings.sweeper
        self._workers: dict[str, Worker] = {}
        self.owner = f"sweeper-{uuid.uuid4().hex[:12]}"
        self.driven = 0

    def _worker(self, name: str) -> Worker:
        if name not in self._workers:
            spec = WORKERS[name](self._container)
            self._workers[name] = Worker(spec, self._sessions, self._container.settings)
        return self._workers[name]

    async def sweep_once(self) -> int:
        """One sweep: track the open work, drive what is due; return how many this one applied."""
        open_work = await self.open_work()
        await self.track(open_work)
        before = utcnow() - timedelta(seconds=self._settings.grace_s)
        due = [(item, work) for item, work in open_work.items() if work.since < before]
        completed = tried = 0
        for item, work in due:
            if tried >= self._settings.batch_size:
                break
            if self._breaker_open(work.platforms):
                continue
            attempts = await self.claim(item)
            if attempts is None:
                continue  # backing off, or another sweeper holds it
            tried += 1
            completed += await self._drive(item, attempts)
        return completed

    async def open_work(self) -> dict[Item, OpenWork]:
        """Work still open in the store, with its platforms and since when it is open."""
        work: dict[Item, OpenWork] = {}

        def add(worker: str, event_id: str, since: datetime, *platforms: str) -> None:
            known = work.get((worker, event_id))
            if known is not None:
                platforms = (*known.platforms, *platforms)
            work[(worker, event_id)] = OpenWork(platforms, since)

        async with self._sessions() as session:
            pending = await session.execute(
                select(OutboxRow.event_id, Application.updated_at, ApplicationEvidence.kind)
                .join(Application, Application.id == OutboxRow.subject)  # received: its subject
                .join(ApplicationEvidence, ApplicationEvidence.application_id == Application.id)
                .where(
                    OutboxRow.type == ApplicationEvent.RECEIVED,
                    Application.status == ApplicationStatus.EVIDENCE_PENDING.value,
                    ApplicationEvidence.status == EvidenceStatus.PENDING.value,
                )
            )
            for event_id, since, kind in pending:
                add("evidence", event_id, since, kind)
            requested = await session.execute(
                select(OutboxRow.event_id, Permit.updated_at)
                .join(Permit, Permit.id == OutboxRow.subject)
                .where(
                    OutboxRow.type == PermitEvent.REQUESTED,
                    Permit.status == PermitStatus.REQUESTED.value,
                )
            )
            for event_id, since in requested:
                add("permits", event_id, since, *WORKER_PLATFORMS["permits"])
            retrying = await session.execute(
                select(Delivery.worker, Delivery.event_id, Delivery.updated_at).where(
                    Delivery.status == DeliveryStatus.RETRYING.value
                )
            )
            for worker, event_id, since in retrying:
                if worker in WORKERS:
                    add(worker, event_id, since, *WORKER_PLATFORMS.get(worker, ()))
            unpushed = await session.execute(
                select(StageChange.event_id, StageChange.created_at)
                .join(Case, Case.application_id == StageChange.application_id)
                .where(StageChange.push_tracked_at.is_(None))  # no delivery row yet
                .order_by(StageChange.application_id, StageChange.seq)
            )
            for event_id, since in unpushed:
                add(PUSHER, event_id, since, *WORKER_PLATFORMS[PUSHER])
        return work

    def _breaker_open(self, platforms: Iterable[str]) -> bool:
        breakers = self._container.breakers
        return any(p in breakers and breakers[p].state is BreakerState.OPEN for p in platforms)

    async def track(self, open_work: dict[Item, OpenWork]) -> None:
        """A row for every open item; rows of items no longer open (and not leased) go."""
        now = time.time()
        async with transaction(self._sessions) as session:
            known = set((await session.execute(select(SweepItem.worker, SweepItem.event_id))).all())
            insert = conflict_insert(session.get_bind().dialect.name)
            for worker, event_id in set(open_work) - {(w, e) for w, e in known}:
                await session.execute(
                    insert(SweepItem)
                    .values(
                        worker=worker,
                        event_id=event_id,
                        status=OPEN,
                        attempts=0,
                        next_attempt_at=0.0,
                        lease_until=0.0,
                        updated_at=utcnow(),
                    )
                    .on_conflict_do_nothing()
                )
            for worker, event_id in {(w, e) for w, e in known} - set(open_work):
                await session.execute(
                    delete(SweepItem).where(
                        SweepItem.worker == worker,
                        SweepItem.event_id == event_id,
                        SweepItem.lease_until < now,
                    )
                )

    async def claim(self, item: Item) -> int | None:
        """Take the item's lease if it is due and free; return its attempts so far, or None."""
        now = time.time()
        worker, event_id = item
        async with transaction(self._sessions) as session:
            claimed = await session.execute(
                update(SweepItem)
                .where(
                    SweepItem.worker == worker,
                    SweepItem.event_id == event_id,
                    SweepItem.status == OPEN,
                    SweepItem.next_attempt_at <= now,
                    SweepItem.lease_until < now,
                )
                .values(lease_owner=self.owner, lease_until=now + self._settings.lease_s)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                return None
            return int(
                await session.scalar(
                    select(SweepItem.attempts).where(
                        SweepItem.worker == worker, SweepItem.event_id == event_id
                    )
                )
                or 0
            )

    async def _drive(self, item: Item, attempts: int) -> int:
        """Apply the item's event through its worker; record the outcome on the item."""
        worker_name, event_id = item
        worker = self._worker(worker_name)
        async with self._sessions() as session:
            row = await session.scalar(select(OutboxRow).where(OutboxRow.event_id == event_id))
        if row is None:
            await self._finish(item)
            return 0
        event = outbox_event(row)
        async with self._sessions() as session:  # a worker recorded a failure: close it too
            failed_before = await session.get(Delivery, item) is not None
        try:
            applied = await worker.apply(event, attempts=1, after_failure=failed_before)
        except TransientError as exc:
            await self._failed(item, event, worker, attempts + 1, exc, dead=False)
            return 0
        except PermanentError as exc:
            try:
                await self._dead_letter(row, worker_name, exc, attempts + 1)
            except BrokerUnavailable:
                dead = False  # no letter without the broker: try again later
            else:
                dead = True
            await self._failed(item, event, worker, attempts + 1, exc, dead=dead)
            return 0
        await self._finish(item)
        if not applied:
            return 0  # done meanwhile by a worker or another sweeper: nothing applied twice
        self.driven += 1
        log.info("open work driven", extra={"worker": worker_name, "event_id": event_id})
        return 1

    async def _dead_letter(
        self, row: OutboxRow, worker: str, exc: Exception, attempts: int
    ) -> None:
        """Put the event on ``<topic>.dlq`` as a worker would, so ``ywtb dlq replay`` revives it."""
        message = outbox_to_message(row)
        error = f"{type(exc).__name__}: {exc}"
        history = [{"attempt": attempts, "at": time.time(), "error": error, "by": self.owner}]
        headers = {
            **message.headers,
            H_WORKER: worker.encode(),
            H_ERROR: error.encode(),
            H_HISTORY: json.dumps(history, ensure_ascii=False).encode(),
            H_TOPIC: row.topic.encode(),
            H_ATTEMPT: str(attempts).encode(),
            H_DEAD_AT: str(time.time()).encode(),
        }
        letter = ce_kafka.KafkaMessage(headers=headers, key=message.key, value=message.value)
        [acked] = await self._container.bus.publish([(dead_letter_topic(row.topic), letter)])
        if not acked:
            raise BrokerUnavailable(f"dead letter of {row.event_id} not acknowledged")

    async def _finish(self, item: Item) -> None:
        async with transaction(self._sessions) as session:
            await session.execute(
                delete(SweepItem).where(
                    SweepItem.worker == item[0],
                    SweepItem.event_id == item[1],
                    SweepItem.lease_owner == self.owner,
                )
            )

    async def _failed(
        self,
        item: Item,
        event: BaseCloudEvent,
        worker: Worker,
        attempts: int,
        exc: Exception,
        *,
        dead: bool,
    ) -> None:
        """Back off (or give up on a permanent rejection), release the lease, record why.

        ``attempts``: the sweeps of this item so far (its delivery row counts one more try).
        """
        error = f"{type(exc).__name__}: {exc}"[:1000]
        delay = min(
            self._settings.backoff_initial_s * 2 ** (attempts - 1), self._settings.backoff_max_s
        ) * (1 + random.random() / 4)
        async with transaction(self._sessions) as session:
            await session.execute(
                update(SweepItem)
                .where(SweepItem.worker == item[0], SweepItem.event_id == item[1])
                .values(
                    status=DEAD if dead else OPEN,
                    attempts=attempts,
                    next_attempt_at=time.time() + delay,
                    lease_owner=None,
                    lease_until=0.0,
                    last_error=error,
                    updated_at=utcnow(),
                )
            )
            if worker.spec.tracks_delivery:
                status = DeliveryStatus.DEAD if dead else DeliveryStatus.RETRYING
                await record_delivery(session, worker.spec.name, event, status, 1, error)
        (log.error if dead else log.warning)(
            "open work failed" + (" for good" if dead else ", backing off"),
            extra={"worker": item[0], "event_id": item[1], "error": error, "attempts": attempts},
        )


def sweeper(container: Container) -> LoopBody:
    """The sweeper as a loop body for ``gateway.supervise.supervise``."""
    sweep = Sweeper(container)
    interval_s = container.settings.sweeper.interval_s

    async def body(stop: asyncio.Event, beat: Beat) -> None:
        await periodic(stop, beat, interval_s, sweep.sweep_once)

    return body
