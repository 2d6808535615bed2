"""Delivery state of events that workers deliver or fail to apply (for the timeline and ops).

A row per (worker, event): ``delivered``, ``retrying`` (retried in place, in
``.retry`` rounds, or left open in the store for the sweeper) or ``dead`` (in
the dead-letter topic until replayed), with every attempt counted and the
real cause of the last failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from aiokafka import ConsumerRecord
from cloudevents.core.base import BaseCloudEvent
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.store.models import Delivery, StageChange, utcnow
from schemas.events import ApplicationEvent

#: The worker that pushes stage changes to 一网通办. Its first record of a stage change
#: marks it ``push_tracked_at``: the sweeper drives only the stage changes it never saw.
PUSHER = "ywtb-status"


class DeliveryStatus(StrEnum):
    DELIVERED = "delivered"
    RETRYING = "retrying"
    DEAD = "dead"  # in the dead-letter topic until replayed


@dataclass(frozen=True)
class DeliveryRef:
    """Which event a delivery row is about."""

    event_id: str
    application_id: str
    event_type: str

    @classmethod
    def of_event(cls, event: BaseCloudEvent) -> DeliveryRef:
        return cls(
            event_id=event.get_id(),
            application_id=str(event.get_extension("partitionkey") or ""),
            event_type=event.get_type(),
        )

    @classmethod
    def of_record(cls, record: ConsumerRecord[bytes, bytes]) -> DeliveryRef:
        """A message that is not a readable CloudEvent: named by its ``ce_id`` or its offset."""
        headers = {name: value.decode("utf-8", "replace") for name, value in record.headers}
        return cls(
            event_id=headers.get("ce_id") or f"{record.topic}/{record.partition}/{record.offset}",
            application_id=record.key.decode("utf-8", "replace") if record.key else "",
            event_type=headers.get("ce_type") or "undecodable",
        )


async def record_delivery(
    session: AsyncSession,
    worker: str,
    event: BaseCloudEvent | DeliveryRef,
    status: DeliveryStatus,
    attempts: int,
    error: str | None = None,
) -> None:
    """Record where ``event`` stands with ``worker``; add ``attempts``, the tries since the
    last record, to those it holds (so every try is counted, across rounds and restarts)."""
    ref = event if isinstance(event, DeliveryRef) else DeliveryRef.of_event(event)
    row = await session.get(Delivery, (worker, ref.event_id[:64]))
    first = row is None
    if row is None:
        row = Delivery(
            worker=worker,
            event_id=ref.event_id[:64],
            application_id=ref.application_id[:64],
            event_type=ref.event_type[:200],
        )
        session.add(row)
    row.status = status.value
    row.attempts = (row.attempts or 0) + attempts
    row.last_error = error[:1000] if error else None
    row.updated_at = utcnow()
    if first and worker == PUSHER and ref.event_type == ApplicationEvent.STAGE_CHANGED:
        await session.execute(
            update(StageChange)
            .where(StageChange.event_id == row.event_id, StageChange.push_tracked_at.is_(None))
            .values(push_tracked_at=row.updated_at)
        )
