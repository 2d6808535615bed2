"""Transactional outbox: events are rows written in the transaction of their state change.

The relay (``gateway.relay``) publishes them; nothing here talks to Kafka.
"""

from __future__ import annotations

import zlib
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.store.models import OutboxRow, utcnow
from gateway.tracing import current_traceparent
from schemas.events import Event


def key_hash(key: str) -> int:
    """Stable hash of an event key: rows of one key share an ordering lane."""
    return zlib.crc32(key.encode("utf-8"))


def add_event(session: AsyncSession, event: Event) -> OutboxRow:
    """Stage ``event`` in the caller's transaction; it is published only if that commits.

    The row keeps the current trace context, which the event carries onward.
    """
    row = OutboxRow(**_columns(event))
    session.add(row)
    return row


async def add_events(session: AsyncSession, events: list[Event]) -> None:
    """``add_event`` for several events in one statement, in their order."""
    await session.execute(insert(OutboxRow), [_columns(event) for event in events])


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
