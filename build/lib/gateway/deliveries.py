"""Delivery state of events that workers deliver to platforms (for the timeline and ops)."""

from __future__ import annotations

from enum import StrEnum

from cloudevents.core.base import BaseCloudEvent
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.store.models import Delivery, utcnow


class DeliveryStatus(StrEnum):
    DELIVERED = "delivered"
    RETRYING = "retrying"
    DEAD = "dead"  # in the dead-letter topic until replayed


async def record_delivery(
    session: AsyncSession,
    worker: str,
    event: BaseCloudEvent,
    status: DeliveryStatus,
    attempts: int,
    error: str | None,
) -> None:
    row = await session.get(Delivery, (worker, event.get_id()))
    if row is None:
        row = Delivery(
            worker=worker,
            event_id=event.get_id(),
            application_id=str(event.get_extension("partitionkey") or ""),
            event_type=event.get_type(),
        )
        session.add(row)
    row.status = status.value
    row.attempts = attempts
    row.last_error = error[:1000] if error else None
    row.updated_at = utcnow()
