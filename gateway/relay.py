"""The outbox relay: publishes committed events to Kafka, in order per key, at least once.

Rows are split into lanes by ``key_hash % lanes``. A relay publishes only the
lanes it holds a lease on, so several relays against one store never publish a
row twice in normal operation, and all rows of one key keep their order (one
lane, one owner, ascending ``seq``). A row is marked sent only after the broker
acknowledged it; while the broker is unreachable the relay backs off and tries
again, losing and reordering nothing. ``run`` is a loop body for
``gateway.supervise``: whatever else it raises, the supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError

from gateway.bus import KafkaBus, outbox_to_message
from gateway.metrics import RELAY_PUBLISHED
from gateway.settings import RelaySettings
from gateway.store.db import Sessions, store_errors, transaction
from gateway.store.models import OutboxLane, OutboxRow, utcnow
from gateway.supervise import Beat, wait_or_stop
from schemas.errors import BrokerUnavailable, StoreUnavailable, TransientError
from schemas.events import all_topics

log = logging.getLogger(__name__)


class Relay:
    def __init__(self, sessions: Sessions, bus: KafkaBus, settings: RelaySettings) -> None:
        self._sessions = sessions
        self._bus = bus
        self._settings = settings
        self.owner = f"relay-{uuid.uuid4().hex[:12]}"

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

    async def release(self) -> None:
        """Give up this relay's leases so another relay can take over at once."""
        async with transaction(self._sessions) as session:
            await session.execute(
                update(OutboxLane)
                .where(OutboxLane.owner == self.owner)
                .values(owner=None, lease_until=0.0)
            )

    async def publish_once(self) -> int:
        """Publish one batch of pending rows from this relay's lanes; return how many were sent."""
        try:
            lanes = await self._claim_lanes()
        except IntegrityError:  # another relay created the lane rows first
            return 0
        if not lanes:
            return 0
        async with self._sessions() as session:
            rows = list(
                (
                    await session.scalars(
                        select(OutboxRow)
                        .where(
                            OutboxRow.sent_at.is_(None),
                            (OutboxRow.key_hash % self._settings.lanes).in_(lanes),
                        )
                        .order_by(OutboxRow.seq)
                        .limit(self._settings.batch_size)
                    )
                ).all()
            )
        if not rows:
            return 0
        acked = await self._bus.publish([(row.topic, outbox_to_message(row)) for row in rows])
        sent = [row.seq for row, ok in zip(rows, acked, strict=True) if ok]
        RELAY_PUBLISHED.inc(len(sent))
        if sent:
            async with transaction(self._sessions) as session:
                await session.execute(
                    update(OutboxRow).where(OutboxRow.seq.in_(sent)).values(sent_at=utcnow())
                )
        if len(sent) < len(rows):
            raise BrokerUnavailable(f"broker acknowledged {len(sent)} of {len(rows)} events")
        return len(sent)

    async def run(self, stop: asyncio.Event, beat: Beat = lambda: None) -> None:
        """Publish until ``stop`` is set (a loop body for ``supervise``).

        While the broker or the store is away it backs off and tries again,
        logging the outage when it starts and when it ends, not per try.
        """
        backoff = 0.1
        outage: str | None = None
        log.info("relay started", extra={"owner": self.owner})
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
                    await wait_or_stop(stop, self._settings.poll_interval_s)
        finally:
            await self._release_quietly()
            log.info("relay stopped", extra={"owner": self.owner})

    async def _release_quietly(self) -> None:
        """Give the leases back if the store answers soon; otherwise they expire by themselves."""
        try:
            with store_errors():
                async with asyncio.timeout(_RELEASE_TIMEOUT_S):
                    await self.release()
        except (StoreUnavailable, TimeoutError) as exc:
            log.warning("relay leases left to expire", extra={"error": str(exc)})


_RELEASE_TIMEOUT_S = 2.0
