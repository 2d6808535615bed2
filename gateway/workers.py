"""The named workers of ``ywtb worker NAME``."""

from __future__ import annotations

from cloudevents.core.base import BaseCloudEvent
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.store.models import TimelineEntry, utcnow
from gateway.worker import WorkerSpec
from schemas.events import APPLICATION_EVENTS


async def record_timeline(session: AsyncSession, event: BaseCloudEvent) -> None:
    """Add the event to its application's timeline (GET /api/v1/applications/{id}/events)."""
    data = event.get_data()
    session.add(
        TimelineEntry(
            application_id=str(event.get_extension("partitionkey")),
            event_id=event.get_id(),
            type=event.get_type(),
            time=event.get_time() or utcnow(),
            data=data if isinstance(data, dict) else {"value": data},
            recorded_at=utcnow(),
        )
    )


WORKERS: dict[str, WorkerSpec] = {
    spec.name: spec
    for spec in (WorkerSpec("timeline", (APPLICATION_EVENTS,), record_timeline),)
}
