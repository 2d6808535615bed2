"""Transactional outbox: events are rows written in the transaction of their state change.

The relay (``gateway.relay``) publishes them; nothing here talks to Kafka.
"""

from __future__ import annotations

import zlib

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.store.models import OutboxRow, utcnow
from schemas.events import Event


def key_hash(key: str) -> int:
    """Stable hash of an event key: rows of one key share an ordering lane."""
    return zlib.crc32(key.encode("utf-8"))


def add_event(session: AsyncSession, event: Event) -> OutboxRow:
    """Stage ``event`` in the caller's transaction; it is published only if that commits."""
    row = OutboxRow(
        event_id=event.id,
        topic=event.topic,
        key=event.key,
        key_hash=key_hash(event.key),
        type=event.type,
        source=event.source,
        subject=event.subject,
        time=event.time,
        data=event.data,
        created_at=utcnow(),
    )
    session.add(row)
    return row


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
