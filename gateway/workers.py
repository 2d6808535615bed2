"""The named workers of ``ywtb worker NAME``, each built from the container."""

from __future__ import annotations

from collections.abc import Callable

from cloudevents.core.base import BaseCloudEvent
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.bootstrap import Container
from gateway.store.models import TimelineEntry, utcnow
from gateway.worker import Effect, WorkerSpec
from schemas.events import APPLICATION_EVENTS, ApplicationEvent


def timeline(_container: Container) -> WorkerSpec:
    """Every application event on its application's timeline."""

    async def handle(event: BaseCloudEvent) -> Effect:
        data = event.get_data()

        async def effect(session: AsyncSession) -> None:
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

        return effect

    return WorkerSpec("timeline", (APPLICATION_EVENTS,), handle)


def evidence(container: Container) -> WorkerSpec:
    """Completes the evidence an application request could not fetch within its budget."""

    async def handle(event: BaseCloudEvent) -> Effect | None:
        if event.get_type() != ApplicationEvent.RECEIVED:
            return None
        data = event.get_data()
        assert isinstance(data, dict)
        return await container.applications.prepare_completion(str(data["application_id"]))

    return WorkerSpec("evidence", (APPLICATION_EVENTS,), handle)


WORKERS: dict[str, Callable[[Container], WorkerSpec]] = {
    "timeline": timeline,
    "evidence": evidence,
}
