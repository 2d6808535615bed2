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
    await record_delivery_of(
        session,
        worker,
        event.get_id(),
        str(event.get_extension("partitionkey") or ""),
        event.get_type(),
        status,
        attempts,
        error,
    )


async def record_delivery_of(
    session: AsyncSession,
    worker: str,
    event_id: str,
    application_id: str,
    event_type: str,
    status: DeliveryStatus,
    attempts: int | None,
    error: str | None,
) -> None:
    """``record_delivery`` by the event's id; ``attempts`` None: one more than recorded."""
    row = await session.get(Delivery, (worker, event_id))
    if row is None:
        row = Delivery(
            worker=worker,
            event_id=event_id,
            application_id=application_id,
            event_type=event_type,
            attempts=0,
        )
        session.add(row)
    row.status = status.value
    row.attempts = attempts if attempts is not None else (row.attempts or 0) + 1
    row.last_error = error[:1000] if error else None
    row.updated_at = utcnow()
