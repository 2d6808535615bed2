"""The asynchronous flows: permits, stage reports, the timeline, and government callbacks."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from sqlalchemy import select

from adapters.permit.mapping import decision_from_callback
from adapters.ywtb.mapping import case_from_callback
from gateway.api.deps import ClientDep, ContainerDep, SessionDep
from gateway.api.problems import problem_responses
from gateway.store.models import Application, Delivery, TimelineEntry
from schemas.applications import DeliveryRecord, TimelineItem
from schemas.cases import StageChangeResource, StageReport
from schemas.errors import FieldError, InvalidInput, NotFound
from schemas.permits import PermitResource, PermitWorks

router = APIRouter(tags=["flows"])
T = TypeVar("T")

#: What the government platforms expect as an acknowledgement.
ACK = {"code": "0000", "msg": "成功"}


@router.post(
    "/api/v1/applications/{application_id}/permits",
    status_code=201,
    summary="File a 占掘路 permit for the application's external works",
    responses=problem_responses(401, 404, 409, 422),
)
async def request_permit(
    application_id: str, works: PermitWorks, _client: ClientDep, container: ContainerDep
) -> PermitResource:
    return await container.permits.request(application_id, works)


@router.get(
    "/api/v1/permits/{permit_id}",
    summary="A permit and the authority's decision",
    responses=problem_responses(401, 404),
)
async def get_permit(permit_id: str, _client: ClientDep, container: ContainerDep) -> PermitResource:
    return await container.permits.get(permit_id)


@router.post(
    "/api/v1/applications/{application_id}/progress",
    status_code=201,
    summary="Report a stage change (pushed to 一网通办 for its case)",
    responses=problem_responses(401, 404, 409, 422),
)
async def report_progress(
    application_id: str, report: StageReport, _client: ClientDep, container: ContainerDep
) -> StageChangeResource:
    return await container.cases.report_stage(application_id, report)


@router.get(
    "/api/v1/applications/{application_id}/events",
    summary="The whole story of an application, with the delivery state of each push",
    responses=problem_responses(401, 404),
)
async def timeline(
    application_id: str, _client: ClientDep, session: SessionDep
) -> list[TimelineItem]:
    if await session.get(Application, application_id) is None:
        raise NotFound(f"application {application_id} not found")
    entries = (
        await session.scalars(
            select(TimelineEntry)
            .where(TimelineEntry.application_id == application_id)
            .order_by(TimelineEntry.time, TimelineEntry.id)
        )
    ).all()
    deliveries: dict[str, list[DeliveryRecord]] = {}
    for row in await session.scalars(
        select(Delivery).where(Delivery.application_id == application_id).order_by(Delivery.worker)
    ):
        deliveries.setdefault(row.event_id, []).append(
            DeliveryRecord(
                worker=row.worker,
                status=row.status,
                attempts=row.attempts,
                last_error=row.last_error,
                updated_at=row.updated_at,
            )
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


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise InvalidInput("body", f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidInput("body", "expected a JSON object")
    return data


def _parsed(parse: Callable[[dict[str, Any]], T], data: dict[str, Any]) -> T:
    """The platform's body as a canonical model; its ``FieldError`` names the field."""
    try:
        return parse(data)
    except FieldError as exc:
        raise InvalidInput(exc.field, exc.reason) from exc
    except ValueError as exc:
        raise InvalidInput("body", str(exc)) from exc


@router.post(
    "/callbacks/permits",
    tags=["callbacks"],
    summary="The road authority's permit decision (signed)",
    responses=problem_responses(401, 404, 422),
)
async def permit_callback(request: Request, container: ContainerDep) -> dict[str, str]:
    app_id, body = await container.callbacks["permit"].verify(request)
    data = _json(body)
    decision = _parsed(decision_from_callback, data)
    await container.permits.apply_decision(decision, app_id, data)
    return ACK


@router.post(
    "/callbacks/ywtb/cases",
    tags=["callbacks"],
    summary="A case filed on 一网通办 (signed); becomes one 一证办电 application",
    responses=problem_responses(401, 422),
)
async def case_callback(request: Request, container: ContainerDep) -> dict[str, str]:
    app_id, body = await container.callbacks["ywtb"].verify(request)
    data = _json(body)
    case = _parsed(case_from_callback, data)
    application_id = await container.cases.receive(case, app_id, data)
    return {**ACK, "application_id": application_id}
