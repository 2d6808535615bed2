"""The outbox relay: publishes committed events to Kafka, in order per key, at least once.

Rows are split into lanes by ``key_hash % lanes``. A relay publishes only the
lanes it holds a lease on, so several relays against one store never publish a
row twice in normal operation, and all rows of one key keep their order (one
lane, one owner, ascending ``seq``). A relay renews its leases once a third of
the lease has passed, not every round.

A round reads a batch of pending rows, sends all of them, then waits for every
acknowledgement; the acknowledged rows are marked sent in one UPDATE, while the
next round reads and sends. During a backlog (a full batch) the next batch is
read while the broker acknowledges this one; it is sent only once this one is
acknowledged, and dropped if anything failed. A row is marked sent only after
the broker acknowledged it (a marking lost with the store means the rows are
published again: at least once); while the broker is unreachable the relay
backs off and tries again, losing nothing.

What keeps the order of one key on its partition: the rows are sent in ``seq``
order to one producer, which writes them in that order (aiokafka keeps one
produce request in flight per broker and holds a partition back until its
batch is answered; a batch retried after a retriable error goes back to the
head of its partition's queue). The next round is sent only once every row of
this one is acknowledged; after a failure the producer is dropped. What is
left: a batch that fails for good while a later batch of the same partition
in the same round gets through. Without the idempotent producer a batch
expires after ``request_timeout_s`` (a broker back just then can take the next
one); the idempotent producer never expires a batch, it retries until
acknowledged (``KafkaSettings.idempotent_producer``, real Kafka only).

Between rounds the relay sleeps until a transaction adds events
(``gateway.outbox``: in this process directly, from other processes by a
PostgreSQL notification on a connection of the relay's own), or at most
``poll_interval_s``. ``run`` is a loop body for ``gateway.supervise``: whatever
else it raises, the supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import uuid
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg
from sqlalchemy import or_, select, text, type_coerce, update
from sqlalchemy.exc import IntegrityError

from gateway.bus import KafkaBus, outbox_to_message
from gateway.metrics import RELAY_PUBLISHED
from gateway.outbox import CHANNEL, on_commit
from gateway.protect import EncryptedJSONBytes
from gateway.settings import RelaySettings
from gateway.store.db import Sessions, store_errors, transaction
from gateway.store.models import OutboxLane, OutboxRow, utcnow
from gateway.supervise import Beat, wait_or_stop
from schemas.errors import BrokerUnavailable, StoreUnavailable, TransientError
from schemas.events import all_topics

log = logging.getLogger(__name__)


class _Pending(NamedTuple):
    """A pending row as a plain tuple: building its message reads its attributes a dozen
    times, which costs a third of a SQLAlchemy ``Row``'s (3.6 against 8.8 µs per message,
    conversion included)."""

    seq: int
    event_id: str
    topic: str
    key: str
    type: str
    source: str
    subject: str | None
    time: datetime
    data: bytes
    traceparent: str | None


#: What a round reads of a pending row, column by column in ``_Pending``'s order: the data as
#: its stored JSON, decrypted, not parsed (it is published as it is).
_PUBLISHED = tuple(
    type_coerce(OutboxRow.data, EncryptedJSONBytes("outbox.data")).label("data")
    if name == "data"
    else getattr(OutboxRow, name)
    for name in _Pending._fields
)


class Relay:
    def __init__(self, sessions: Sessions, bus: KafkaBus, settings: RelaySettings) -> None:
        self._sessions = sessions
        self._bus = bus
        self._settings = settings
        self.owner = f"relay-{uuid.uuid4().hex[:12]}"
        self._lanes: list[int] = []
        self._claimed_at = -math.inf  # time.monotonic() of the last claim
        self._wake = asyncio.Event()  # set when a transaction added events
        self._marking: asyncio.Future[None] | None = None  # rows acknowledged, being marked
        self._marking_seqs: list[int] = []
        self._ahead: tuple[list[int], asyncio.Future[list[_Pending]]] | None = None

    async def _claim_lanes(self) -> list[int]:
        """Take free lanes and renew held ones; return the lanes this relay now owns."""
        now = time.time()
        async with transaction(self._sessions) as session:
            present = set((await session.scalars(select(OutboxLane.lane))).all())
            missing = set(range(self._settings.lanes)) - present
            if missing:
                session.add_all(
                    OutboxLane(lane=lane, owner=None, lease_until=0.0) for lane in missing
                )
                await session.flush()
            await session.execute(
                update(OutboxLane)
                .where(or_(OutboxLane.owner == self.owner, OutboxLane.lease_until < now))
                .values(owner=self.owner, lease_until=now + self._settings.lease_s)
            )
            owned = await session.scalars(
                select(OutboxLane.lane).where(OutboxLane.owner == self.owner)
            )
            return sorted(lane for lane in owned if lane < self._settings.lanes)

    async def _held_lanes(self) -> list[int]:
        """The lanes this relay owns, claimed again once a third of the lease has passed,
        or every round while it holds fewer than all (a released lane is taken at once)."""
        started = time.monotonic()
        due = started - self._claimed_at >= self._settings.lease_s / 3
        if due or len(self._lanes) < self._settings.lanes:
            self._lanes = await self._claim_lanes()
            self._claimed_at = started
        return self._lanes

    async def release(self) -> None:
        """Give up this relay's leases so another relay can take over at once."""
        self._lanes, self._claimed_at = [], -math.inf
        async with transaction(self._sessions) as session:
            await session.execute(
                update(OutboxLane)
                .where(OutboxLane.owner == self.owner)
                .values(owner=None, lease_until=0.0)
            )

    async def publish_once(self) -> int:
        """Publish one batch of pending rows from this relay's lanes; return how many were sent.

        The rows the broker acknowledged are marked sent while the next batch is read
        and sent (one marking at a time; that batch leaves out the rows being marked).
        A full batch means a backlog: the next one is read while the broker acknowledges
        this one, and sent only once it has.
        """
        self._wake.clear()  # what commits from now on wakes the next wait
        try:
            lanes = await self._held_lanes()
        except IntegrityError:  # another relay created the lane rows first
            return 0
        if not lanes:
            return 0
        rows = await self._next_batch(lanes)
        if not rows:
            await self._marked()
            return 0
        acknowledged = await self._bus.send([(row.topic, outbox_to_message(row)) for row in rows])
        if len(rows) == self._settings.batch_size:
            self._ahead = lanes, asyncio.ensure_future(self._read(lanes, after=rows[-1].seq))
        try:
            acked = await acknowledged
            sent = [row.seq for row, ok in zip(rows, acked, strict=True) if ok]
            RELAY_PUBLISHED.inc(len(sent))
            await self._marked()
            if sent:
                self._marking = asyncio.ensure_future(self._mark_sent(sent))
                self._marking_seqs = sent
            if len(sent) < len(rows):
                raise BrokerUnavailable(f"broker acknowledged {len(sent)} of {len(rows)} events")
        except BaseException:
            await self._drop_ahead()  # read on the premise that this batch got through
            raise
        return len(sent)

    async def _next_batch(self, lanes: list[int]) -> list[_Pending]:
        """The batch read ahead, if it was read for these lanes and is full (a short one
        may have missed rows whose wake-up came before this round); otherwise a fresh read."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead_lanes, reading = ahead
            rows = await reading
            if ahead_lanes == lanes and len(rows) == self._settings.batch_size:
                return rows
        return await self._read(lanes)

    async def _read(self, lanes: list[int], after: int | None = None) -> list[_Pending]:
        """The first pending rows of ``lanes`` in ``seq`` order: from the front, leaving out
        the rows being marked; or, read ahead, those after the last row being sent (a row
        committed late below it, by a transaction slower than a later one, waits for a round
        that reads from the front: at the latest the first one after the backlog)."""
        query = select(*_PUBLISHED).where(
            OutboxRow.sent_at.is_(None), (OutboxRow.key_hash % self._settings.lanes).in_(lanes)
        )
        if after is not None:
            query = query.where(OutboxRow.seq > after)
        elif self._marking is not None and not self._marking.done():
            query = query.where(OutboxRow.seq.not_in(self._marking_seqs))
        with store_errors():
            async with self._sessions.engine.connect() as connection:
                if connection.dialect.name == "postgresql":
                    await connection.execute(_IN_SEQ_ORDER)
                result = await connection.execute(
                    query.order_by(OutboxRow.seq).limit(self._settings.batch_size)
                )
                return [_Pending._make(row) for row in result]

    async def _drop_ahead(self) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead[1].cancel()
            await asyncio.gather(ahead[1], return_exceptions=True)

    async def _mark_sent(self, seqs: list[int]) -> None:
        with store_errors():
            async with self._sessions.engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    await connection.execute(_NO_FLUSH_WAIT)
                await connection.execute(
                    update(OutboxRow).where(OutboxRow.seq.in_(seqs)).values(sent_at=utcnow())
                )

    async def _marked(self) -> None:
        """Wait for the marking under way, if any (its failure is raised here)."""
        marking, self._marking = self._marking, None
        if marking is not None:
            await marking

    async def run(self, stop: asyncio.Event, beat: Beat = lambda: None) -> None:
        """Publish until ``stop`` is set (a loop body for ``supervise``).

        While the broker or the store is away it backs off and tries again,
        logging the outage when it starts and when it ends, not per try.
        """
        backoff = 0.1
        outage: str | None = None
        log.info("relay started", extra={"owner": self.owner})
        unsubscribe = on_commit(self._wake.set)
        listener = (
            asyncio.create_task(self._listen(stop))
            if self._sessions.engine.dialect.name == "postgresql"
            else None
        )
        try:
            while not stop.is_set():
                beat()
                try:
                    with store_errors():
                        await self._bus.ensure_topics(all_topics())
                        sent = await self.publish_once()
                except TransientError as exc:
                    if outage is None:
                        outage = exc.code
                        log.warning(
                            "relay backing off", extra={"error": exc.detail, "cause": exc.code}
                        )
                    if isinstance(exc, BrokerUnavailable):
                        await self._bus.reset()
                    await wait_or_stop(stop, backoff * (1 + random.random() / 2))
                    backoff = min(backoff * 2, self._settings.backoff_max_s)
                    continue
                if outage is not None:
                    log.info("relay publishing again", extra={"after": outage})
                    outage, backoff = None, 0.1
                if sent < self._settings.batch_size:
                    await wait_or_stop(stop, self._settings.poll_interval_s, self._wake)
        finally:
            unsubscribe()
            if listener is not None:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)
            await self._drop_ahead()
            await self._release_quietly()
            log.info("relay stopped", extra={"owner": self.owner})

    async def _listen(self, stop: asyncio.Event) -> None:
        """Wake the relay on each notification of committed events (PostgreSQL ``LISTEN``),
        on a connection of its own, reconnecting with back-off while the store is away."""
        engine = self._sessions.engine
        # The pool's connection parameters (host, credentials, ssl), less SQLAlchemy's own.
        params = engine.dialect.create_connect_args(engine.url)[1]
        for own in ("prepared_statement_cache_size", "prepared_statement_name_func"):
            params.pop(own, None)
        backoff = 0.1
        while not stop.is_set():
            connected = time.monotonic()
            try:
                async with asyncio.timeout(_LISTEN_TIMEOUT_S):
                    connection = await asyncpg.connect(**params)
                try:
                    await self._listen_on(connection, stop)
                finally:
                    connection.terminate()
            except _LISTEN_ERRORS as exc:
                log.debug("relay not listening, polling", extra={"error": str(exc)})
            if time.monotonic() - connected > _LISTEN_CHECK_S:
                backoff = 0.1  # that connection lasted: the store is back
            await wait_or_stop(stop, backoff * (1 + random.random() / 2))
            backoff = min(backoff * 2, self._settings.backoff_max_s)

    async def _listen_on(self, connection: asyncpg.Connection, stop: asyncio.Event) -> None:
        """Wake the relay on each notification until ``stop``, or until the connection is lost
        (closed, or silent when checked)."""
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _connection: lost.set())
        await connection.add_listener(CHANNEL, self._notified)
        self._wake.set()  # what was committed while not listening
        while not (stop.is_set() or lost.is_set()):
            await wait_or_stop(stop, _LISTEN_CHECK_S, lost)
            if not (stop.is_set() or lost.is_set()):
                async with asyncio.timeout(_LISTEN_TIMEOUT_S):
                    await connection.execute("SELECT 1")

    def _notified(self, *_args: Any) -> None:
        self._wake.set()

    async def _release_quietly(self) -> None:
        """Finish marking and give the leases back if the store answers soon; otherwise the
        unmarked rows are published again, and the leases expire by themselves."""
        try:
            with store_errors():
                async with asyncio.timeout(_RELEASE_TIMEOUT_S):
                    await self._marked()
                    await self.release()
        except (StoreUnavailable, TimeoutError) as exc:
            log.warning("relay leases left to expire", extra={"error": str(exc)})


#: The batch comes off ``ix_outbox_unsent`` in ``seq`` order, whatever the planner's statistics
#: say: with statistics from before a backlog it estimates a handful of unsent rows and
#: chooses to fetch them all and sort, every round, however long the backlog.
_IN_SEQ_ORDER = text("SET LOCAL enable_sort = off")
#: A marking lost with the store's last moments only means its rows are published again.
_NO_FLUSH_WAIT = text("SET LOCAL synchronous_commit = off")
_RELEASE_TIMEOUT_S = 2.0
_LISTEN_TIMEOUT_S = 5.0  # connecting, and answering the check of a quiet listening connection
_LISTEN_CHECK_S = 10.0  # how often a quiet listening connection is checked
_LISTEN_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
