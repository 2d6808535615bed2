"""一网通办 cases: each filed case becomes exactly one 一证办电 application, and every
stage the marketing system reports becomes an event that is pushed back to the case.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from pydantic import ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.ports import CaseStatusSink
from gateway.applications import ApplicationService
from gateway.deadlines import DeadlineService
from gateway.outbox import add_event
from gateway.store.db import Sessions, transaction
from gateway.store.models import Application, Case, ReceivedCallback, StageChange, utcnow
from schemas.applications import ApplicationRequest
from schemas.cases import (
    CaseStatusUpdate,
    InboundCase,
    StageChangeResource,
    StageReport,
    check_stage_report,
)
from schemas.errors import Conflict, InvalidInput, NotFound
from schemas.events import APPLICATION_EVENTS, CASE_EVENTS, ApplicationEvent, CaseEvent, Event

log = logging.getLogger(__name__)

#: The API client name under which 一网通办 cases are submitted (idempotency scope).
YWTB_CLIENT = "ywtb"


def application_request(case: InboundCase) -> ApplicationRequest:
    """The 一证办电 request a case stands for; ``InvalidInput`` names the bad field."""
    try:
        return ApplicationRequest.model_validate(
            {
                "applicant": {
                    "credential_type": case.credential_type,
                    "credential_no": case.credential_no,
                },
                "site": {"address": case.site_address, "district_code": case.district_code},
                "request": {
                    "business_type": case.business_type,
                    "voltage_level": case.voltage_level,
                    "capacity_kva": case.capacity_kva,
                },
                "project_code": case.project_code,
            }
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        error = first.get("ctx", {}).get("error")
        raise InvalidInput(field, str(error) if error is not None else first["msg"]) from exc


class CaseService:
    def __init__(
        self,
        sessions: Sessions,
        applications: ApplicationService,
        sink: CaseStatusSink,
        deadlines: DeadlineService,
    ) -> None:
        self._sessions = sessions
        self._applications = applications
        self._sink = sink
        self._deadlines = deadlines

    async def receive(self, case: InboundCase, app_id: str, body: dict[str, Any]) -> str:
        """The application of ``case``, created the first time the case arrives.

        The callback is kept (``callbacks``) with the case in one transaction; a
        repeat finds both and changes nothing.
        """
        submitted = await self._applications.submit(
            application_request(case), client=YWTB_CLIENT, idempotency_key=f"case:{case.case_no}"
        )
        application_id = submitted.application.id
        try:
            async with transaction(self._sessions) as session:
                session.add(
                    ReceivedCallback(
                        platform="ywtb",
                        callback_key=case.case_no,
                        app_id=app_id,
                        body=body,
                        received_at=utcnow(),
                    )
                )
                session.add(
                    Case(
                        case_no=case.case_no,
                        item_code=case.item_code,
                        application_id=application_id,
                        received_at=utcnow(),
                    )
                )
                await session.flush()
                # The customer's clock starts when they filed on the portal (their clock may
                # run ahead of ours: never later than now).
                await session.execute(
                    update(Application)
                    .where(Application.id == application_id)
                    .values(received_at=min(case.filed_at, utcnow()))
                )
                await self._deadlines.record(session, application_id)
                add_event(
                    session,
                    Event(
                        topic=CASE_EVENTS,
                        type=CaseEvent.RECEIVED,
                        key=application_id,
                        subject=case.case_no,
                        data={
                            "case_no": case.case_no,
                            "item_code": case.item_code,
                            "application_id": application_id,
                            "applicant_name": case.applicant_name,
                            "status": submitted.application.status.value,
                            "filed_at": case.filed_at.isoformat(),
                        },
                    ),
                )
        except IntegrityError:
            pass  # the case arrived before: it already has its application and event
        return application_id

    async def report_stage(self, application_id: str, report: StageReport) -> StageChangeResource:
        """Record a stage change and its event; the ``ywtb-status`` worker pushes it."""
        check_stage_report(report)
        for _ in range(3):  # two reports of one application racing for the next seq
            try:
                return await self._record_stage(application_id, report)
            except IntegrityError:
                continue
        raise Conflict(f"concurrent stage reports for application {application_id}")

    async def _record_stage(self, application_id: str, report: StageReport) -> StageChangeResource:
        async with transaction(self._sessions) as session:
            if await session.get(Application, application_id) is None:
                raise NotFound(f"application {application_id} not found")
            last = await session.scalar(
                select(func.max(StageChange.seq)).where(
                    StageChange.application_id == application_id
                )
            )
            case_no = await session.scalar(
                select(Case.case_no).where(Case.application_id == application_id)
            )
            change = StageChange(
                application_id=application_id,
                seq=(last or 0) + 1,
                stage=report.stage.value,
                handler=report.handler,
                occurred_at=report.occurred_at or utcnow(),
                reason=report.reason,
                result_code=report.result_code,
                event_id=str(uuid.uuid4()),
                created_at=utcnow(),
            )
            session.add(change)
            await session.flush()
            clock = await self._deadlines.record(session, application_id)
            resource = StageChangeResource.model_validate(change, from_attributes=True)
            resource = resource.model_copy(
                update={
                    "case_no": case_no,
                    "time_limit_days": clock.limit_days,
                    "day_kind": clock.day_kind.value,
                    "due_at": None if clock.ended_at else clock.due_at,
                }
            )
            add_event(
                session,
                Event(
                    topic=APPLICATION_EVENTS,
                    type=ApplicationEvent.STAGE_CHANGED,
                    key=application_id,
                    subject=application_id,
                    id=change.event_id,
                    data=resource.model_dump(mode="json"),
                ),
            )
        return resource

    async def prepare_push(
        self, event: BaseCloudEvent
    ) -> Callable[[AsyncSession], Awaitable[None]] | None:
        """Push a stage change to its 一网通办 case; None if the application has no case."""
        if event.get_type() != ApplicationEvent.STAGE_CHANGED:
            return None
        change = StageChangeResource.model_validate(event.get_data())
        if change.case_no is None:
            return None
        update = CaseStatusUpdate.model_validate(change.model_dump())
        try:
            await self._sink.push_status(update)
        except Conflict:
            # 4090: the case already shows a later stage; this push is stale, not lost.
            log.warning(
                "stale status push dropped", extra={"case_no": update.case_no, "seq": update.seq}
            )

        async def delivered(_session: AsyncSession) -> None:
            """Nothing to change here: the inbox and the delivery record say it arrived."""

        return delivered
