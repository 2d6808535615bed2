"""The asynchronous flows: permits, stage reports, the timeline, and government callbacks.

A callback route is made for each platform of the registry that calls back
(``adapters.registry.calling_back``): its path, decoder and acknowledgement are
the platform's; what the core does with the decoded model is ``RECEIVERS``'.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.platform import Callback
from adapters.registry import calling_back
from gateway.api.applications import REPLAYED, IdempotencyKeyHeader, answered_again
from gateway.api.deps import (
    ApplicationId,
    ContainerDep,
    ReadClient,
    ResourceId,
    WriteClient,
)
from gateway.api.problems import problem_responses
from gateway.applications import visible_application
from gateway.bootstrap import Container
from gateway.store.models import Application, Delivery, TimelineEntry
from schemas.applications import DeliveryRecord, TimelineItem
from schemas.cases import InboundCase, StageChangeResource, StageReport
from schemas.errors import FieldError, InvalidInput, NotFound
from schemas.permits import PermitDecision, PermitResource, PermitWorks

router = APIRouter(tags=["flows"])
T = TypeVar("T")


@router.post(
    "/api/v1/applications/{application_id}/permits",
    status_code=201,
    summary="File a 占掘路 permit for the application's external works",
    responses={**REPLAYED, **problem_responses(401, 404, 409, 422)},
)
async def request_permit(
    application_id: ApplicationId,
    works: PermitWorks,
    client: WriteClient,
    container: ContainerDep,
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
) -> PermitResource:
    await container.applications.check_visible(application_id, client)
    permit = await container.permits.request(
        application_id, works, client=client.name, idempotency_key=idempotency_key
    )
    response.headers["Location"] = f"/api/v1/permits/{permit.resource.id}"
    answered_again(response, permit.created)
    return permit.resource


@router.get(
    "/api/v1/permits/{permit_id}",
    summary="A permit and the authority's decision",
    responses=problem_responses(401, 404),
)
async def get_permit(
    permit_id: ResourceId, client: ReadClient, container: ContainerDep
) -> PermitResource:
    permit = await container.permits.get(permit_id)
    try:
        await container.applications.check_visible(permit.application_id, client)
    except NotFound:
        raise NotFound(f"permit {permit_id} not found") from None
    return permit


@router.post(
    "/api/v1/applications/{application_id}/progress",
    status_code=201,
    summary="Report a stage change (pushed to 一网通办 for its case)",
    description=(
        "Stages follow the application's procedures, in order and none skipped; "
        "`completed` (办结) only after the last procedure; nothing after `completed` or "
        "`refused`; `supplement_requested` (补正) and `refused` need a `reason`, and 补正 "
        "may repeat. A stage out of order is a 409 problem naming `current_stage`."
    ),
    responses={**REPLAYED, **problem_responses(401, 404, 409, 422)},
)
async def report_progress(
    application_id: ApplicationId,
    report: StageReport,
    client: WriteClient,
    container: ContainerDep,
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
) -> StageChangeResource:
    await container.applications.check_visible(application_id, client)
    change = await container.cases.report_stage(
        application_id, report, client=client.name, idempotency_key=idempotency_key
    )
    answered_again(response, change.created)
    return change.resource


@router.get(
    "/api/v1/applications/{application_id}/events",
    summary="The whole story of an application, with the delivery state of each push",
    responses=problem_responses(401, 404),
)
async def timeline(
    application_id: ApplicationId, client: ReadClient, container: ContainerDep
) -> list[TimelineItem]:
    async with container.sessions() as session:
        await visible_application(session, application_id, client)
        return await load_timeline(session, application_id)


async def load_timeline(session: AsyncSession, application_id: str) -> list[TimelineItem]:
    """The application's events in order, each with its deliveries (for the API and /ops)."""
    if await session.get(Application, application_id) is None:
        raise NotFound(f"application {application_id} not found")
    entries = (
        await session.scalars(
            select(TimelineEntry)
            .where(TimelineEntry.application_id == application_id)
            .order_by(TimelineEntry.time, TimelineEntry.id)
        )
    ).all()
    rows = await session.scalars(
        select(Delivery).where(Delivery.application_id == application_id).order_by(Delivery.worker)
    )
    deliveries: dict[str, list[DeliveryRecord]] = {}
    for row in rows:
        deliveries.setdefault(row.event_id, []).append(
            DeliveryRecord.model_validate(row, from_attributes=True)
        )
    return [
        TimelineItem(
            event_id=e.event_id,
            type=e.type,
            time=e.time,
            data=e.data,
            deliveries=deliveries.get(e.event_id, []),
        )
        for e in entries
    ]


def _parsed(parse: Callable[[dict[str, Any]], T], data: dict[str, Any]) -> T:
    """The platform's body as a canonical model; its ``FieldError`` names the field."""
    try:
        return parse(data)
    except FieldError as exc:
        raise InvalidInput(exc.field, exc.reason) from exc
    except ValueError as exc:
        raise InvalidInput("body", str(exc)) from exc


#: The core's handling of a decoded callback: the fields it adds to the acknowledgement.
Receive = Callable[[Container, Any, str, dict[str, Any]], Awaitable[dict[str, str]]]


async def _permit_decision(
    container: Container, decision: PermitDecision, app_id: str, data: dict[str, Any]
) -> dict[str, str]:
    await container.permits.apply_decision(decision, app_id, data)
    return {}


async def _inbound_case(
    container: Container, case: InboundCase, app_id: str, data: dict[str, Any]
) -> dict[str, str]:
    return {"application_id": await container.cases.receive(case, app_id, data)}


#: What the core does with each canonical model a platform calls us back with, and the
#: problems it may answer.
RECEIVERS: dict[type[BaseModel], tuple[Receive, tuple[int, ...]]] = {
    PermitDecision: (_permit_decision, (401, 404, 422)),
    InboundCase: (_inbound_case, (401, 422)),
}


def _callback_route(
    platform: str, callback: Callback[Any], receive: Receive
) -> Callable[[Request, ContainerDep], Awaitable[dict[str, str]]]:
    async def route(request: Request, container: ContainerDep) -> dict[str, str]:
        app_id, data = await container.callbacks[platform].verify(request)
        received = _parsed(callback.decode, data)
        return {**callback.ack, **await receive(container, received, app_id, data)}

    return route


def _add_callback_routes() -> None:
    for platform, callback in calling_back():
        receive, problems = RECEIVERS[callback.model]
        router.add_api_route(
            callback.path,
            _callback_route(platform.name, callback, receive),
            methods=["POST"],
            name=callback.route_name,
            tags=["callbacks"],
            summary=callback.summary,
            responses=problem_responses(*problems),
        )


_add_callback_routes()
