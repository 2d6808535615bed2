"""The named workers of ``ywtb worker NAME``, each built from the container."""

from __future__ import annotations

from collections.abc import Callable

from cloudevents.core.base import BaseCloudEvent
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.bootstrap import Container
from gateway.store.models import TimelineEntry, utcnow
from gateway.worker import Effect, WorkerSpec
from schemas.cases import MarketingNotice
from schemas.events import (
    APPLICATION_EVENTS,
    CASE_EVENTS,
    PERMIT_EVENTS,
    TOPICS,
    ApplicationEvent,
    CaseEvent,
    PermitEvent,
)

#: The topics each worker reads (its consumer group is ``ywtb.worker.<name>``).
WORKER_TOPICS: dict[str, tuple[str, ...]] = {
    "timeline": TOPICS,
    "evidence": (APPLICATION_EVENTS,),
    "permits": (PERMIT_EVENTS,),
    "marketing": (PERMIT_EVENTS, CASE_EVENTS, APPLICATION_EVENTS),
    "ywtb-status": (APPLICATION_EVENTS,),
}


def _data(event: BaseCloudEvent) -> dict[str, object]:
    data = event.get_data()
    return data if isinstance(data, dict) else {"value": data}


async def _nothing(_session: AsyncSession) -> None:
    """The delivery itself was the effect; the inbox records it."""


def timeline(_container: Container) -> WorkerSpec:
    """Every event of an application on its timeline (GET /api/v1/applications/{id}/events)."""

    async def handle(event: BaseCloudEvent) -> Effect:
        async def effect(session: AsyncSession) -> None:
            session.add(
                TimelineEntry(
                    application_id=str(event.get_extension("partitionkey")),
                    event_id=event.get_id(),
                    type=event.get_type(),
                    time=event.get_time() or utcnow(),
                    data=_data(event),
                    recorded_at=utcnow(),
                )
            )

        return effect

    return WorkerSpec("timeline", WORKER_TOPICS["timeline"], handle)


def evidence(container: Container) -> WorkerSpec:
    """Completes the evidence an application request could not fetch within its budget."""

    async def handle(event: BaseCloudEvent) -> Effect | None:
        if event.get_type() != ApplicationEvent.RECEIVED:
            return None
        application_id = str(_data(event)["application_id"])
        return await container.applications.prepare_completion(application_id)

    return WorkerSpec("evidence", WORKER_TOPICS["evidence"], handle)


def permits(container: Container) -> WorkerSpec:
    """Files requested 占掘路 permits with the road authority."""

    async def handle(event: BaseCloudEvent) -> Effect | None:
        if event.get_type() != PermitEvent.REQUESTED:
            return None
        return await container.permits.prepare_filing(str(_data(event)["permit_id"]))

    return WorkerSpec("permits", WORKER_TOPICS["permits"], handle)


#: What the marketing system is told, by event type (deadline events: a 催办 reminder).
MARKETING_NOTICES = {
    PermitEvent.DECIDED: "permit_decision",
    CaseEvent.RECEIVED: "case_received",
    ApplicationEvent.DEADLINE_WARNING: "deadline_warning",
    ApplicationEvent.DEADLINE_OVERDUE: "deadline_overdue",
}


def marketing(container: Container) -> WorkerSpec:
    """Delivers permit decisions, 一网通办 cases and deadline reminders (催办) to the marketing
    system (营销系统)."""

    async def handle(event: BaseCloudEvent) -> Effect | None:
        kind = MARKETING_NOTICES.get(event.get_type())
        if kind is None:
            return None
        payload = _data(event)
        if kind == "case_received":  # the bus carries no names: read it from the store
            case_no = str(payload["case_no"])
            payload["applicant_name"] = await container.cases.applicant_name(case_no)
        await container.marketing.notify(
            MarketingNotice(
                event_id=event.get_id(),
                kind=kind,
                application_id=str(event.get_extension("partitionkey")),
                occurred_at=event.get_time() or utcnow(),
                payload=payload,
            )
        )
        return _nothing

    return WorkerSpec("marketing", WORKER_TOPICS["marketing"], handle, tracks_delivery=True)


def ywtb_status(container: Container) -> WorkerSpec:
    """Pushes stage changes to 一网通办, in order per case (办件状态推送)."""
    return WorkerSpec(
        "ywtb-status",
        WORKER_TOPICS["ywtb-status"],
        container.cases.prepare_push,
        ordered=True,
        tracks_delivery=True,
    )


WORKERS: dict[str, Callable[[Container], WorkerSpec]] = {
    "timeline": timeline,
    "evidence": evidence,
    "permits": permits,
    "marketing": marketing,
    "ywtb-status": ywtb_status,
}
