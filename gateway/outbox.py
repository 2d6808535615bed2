"""Transactional outbox: events are rows written in the transaction of their state change.

The relay (``gateway.relay``) publishes them; nothing here talks to Kafka.
A transaction that adds events wakes the relays when it commits, so they need
not poll: relays of this process through ``on_commit``, relays of other
processes through a PostgreSQL ``NOTIFY`` on ``CHANNEL``, raised by a statement
trigger on ``outbox`` (migration 0014: no extra round trip, whatever inserts the
rows; PostgreSQL delivers it at commit, once per transaction, never for a
rollback). A relay still polls at its interval, so a lost wake-up only delays
an event.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import Table, event, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from gateway.store.models import OutboxRow, utcnow
from gateway.tracing import current_traceparent
from schemas.events import Event

#: The outbox table, for Core inserts.
OUTBOX = cast(Table, OutboxRow.__table__)


def key_hash(key: str) -> int:
    """Stable hash of an event key: rows of one key share an ordering lane."""
    return zlib.crc32(key.encode("utf-8"))


def add_event(session: AsyncSession, event: Event) -> OutboxRow:
    """Stage ``event`` in the caller's transaction; it is published only if that commits.

    The row keeps the current trace context, which the event carries onward.
    """
    row = OutboxRow(**_columns(event))
    session.add(row)
    session.info[_ADDED] = True
    return row


async def add_events(session: AsyncSession, events: list[Event]) -> None:
    """``add_event`` for several events in one statement, in their order.

    A Core insert of the table: the ORM's bulk path would only add its bookkeeping.
    """
    await session.execute(insert(OUTBOX), [_columns(event) for event in events])
    session.info[_ADDED] = True


def _columns(event: Event) -> dict[str, Any]:
    return {
        "event_id": event.id,
        "topic": event.topic,
        "key": event.key,
        "key_hash": key_hash(event.key),
        "type": event.type,
        "source": event.source,
        "subject": event.subject,
        "time": event.time,
        "data": event.data,
        "created_at": utcnow(),
        "traceparent": current_traceparent(),
    }


CHANNEL = "ywtb_outbox"
"""The PostgreSQL notification channel of committed outbox rows (``LISTEN ywtb_outbox``)."""

_ADDED = "ywtb_outbox_added"
_committed: set[Callable[[], None]] = set()


def on_commit(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` (in the event loop's thread) after each commit that added events in
    this process; return the function that unsubscribes it."""
    _committed.add(callback)
    return lambda: _committed.discard(callback)


@event.listens_for(Session, "after_commit")
def _wake_this_process(session: Session) -> None:
    if session.info.get(_ADDED):
        for callback in list(_committed):
            callback()


@event.listens_for(Session, "after_transaction_end")
def _forget(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the outermost transaction: committed or rolled back
        session.info.pop(_ADDED, None)


async def backlog(session: AsyncSession) -> tuple[int, float | None]:
    """Rows not yet published and the age in seconds of the oldest one."""
    count, oldest = (
        await session.execute(
            select(func.count(), func.min(OutboxRow.created_at)).where(OutboxRow.sent_at.is_(None))
        )
    ).one()
    if oldest is None:
        return 0, None
    return int(count), (utcnow() - oldest).total_seconds()
