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
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.ports import CaseStatusSink
from gateway.applications import ApplicationService
from gateway.callbacks import keep_callback
from gateway.deadlines import DeadlineService
from gateway.deliveries import DeliveryRef, DeliveryStatus, record_delivery
from gateway.idempotency import Created, remember, replay, request_hash
from gateway.outbox import add_event
from gateway.settings import StageSettings
from gateway.store.db import Sessions, transaction
from gateway.store.models import (
    Application,
    Case,
    OutboxRow,
    ReceivedCallback,
    StageChange,
    utcnow,
)
from schemas.applications import ApplicationRequest, ApplicationResource, field_path
from schemas.cases import (
    CaseStatusUpdate,
    InboundCase,
    StageChangeResource,
    StageReport,
    check_stage_report,
    check_stage_transition,
)
from schemas.errors import Conflict, InvalidInput, NotFound, PushOutOfOrder, StageOutOfOrder
from schemas.events import APPLICATION_EVENTS, CASE_EVENTS, ApplicationEvent, CaseEvent, Event
from schemas.stages import Stage

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
        field = field_path(first["loc"])
        error = first.get("ctx", {}).get("error")
        raise InvalidInput(field, str(error) if error is not None else first["msg"]) from exc


class CaseService:
    def __init__(
        self,
        sessions: Sessions,
        applications: ApplicationService,
        sink: CaseStatusSink,
        deadlines: DeadlineService,
        settings: StageSettings | None = None,
        *,
        decode_case: Callable[[dict[str, Any]], InboundCase],
    ) -> None:
        self._sessions = sessions
        self._decode_case = decode_case  # a stored case callback's body, read again
        self._applications = applications
        self._sink = sink
        self._deadlines = deadlines
        self._settings = settings or StageSettings()

    async def receive(self, case: InboundCase, app_id: str, body: dict[str, Any]) -> str:
        """The application of ``case``, created the first time the case arrives.

        The callback is kept (``callbacks``) with the case, its event and the
        application in one transaction; a repeat finds the case's key and changes
        nothing. The customer's clock starts when they filed on the portal (their
        clock may run ahead of ours: never later than now).
        """

        def file_case(session: AsyncSession, application: ApplicationResource) -> None:
            now = utcnow()
            keep_callback(session, "ywtb", case.case_no, app_id, body)
            session.add(
                Case(
                    case_no=case.case_no,
                    item_code=case.item_code,
                    application_id=application.id,
                    received_at=now,
                )
            )
            add_event(
                session,
                Event(
                    topic=CASE_EVENTS,
                    type=CaseEvent.RECEIVED,
                    key=application.id,
                    subject=case.case_no,
                    data={
                        "case_no": case.case_no,
                        "item_code": case.item_code,
                        "application_id": application.id,
                        "status": application.status.value,
                        "filed_at": case.filed_at.isoformat(),
                    },
                ),
            )

        submitted = await self._applications.submit(
            application_request(case),
            client=YWTB_CLIENT,
            idempotency_key=f"case:{case.case_no}",
            received_at=min(case.filed_at, utcnow()),
            also=file_case,
        )
        return submitted.application.id

    async def applicant_name(self, case_no: str) -> str | None:
        """The applicant's name on a case, from its stored callback (never from the bus)."""
        async with self._sessions() as session:
            callback = await session.get(ReceivedCallback, ("ywtb", case_no))
        return self._decode_case(callback.body).applicant_name if callback else None

    async def report_stage(
        self,
        application_id: str,
        report: StageReport,
        *,
        client: str = "",
        idempotency_key: str | None = None,
    ) -> Created[StageChangeResource]:
        """Record a stage change and its event; the ``ywtb-status`` worker pushes it.

        The stage rules (``schemas.cases.check_stage_transition``) are checked
        against the stages recorded so far, in the transaction that records the
        new one, so a refusal stores nothing and two racing reports cannot both
        pass on the same history. With ``idempotency_key`` a repeat answers the
        stage change the first request recorded.
        """
        check_stage_report(report)
        fingerprint = request_hash("progress", application_id, report.model_dump_json())
        for _ in range(3):  # two reports of one application racing for the next seq
            try:
                return await self._record_stage(
                    application_id, report, client, idempotency_key, fingerprint
                )
            except IntegrityError:
                continue
            except StageOutOfOrder:
                # A duplicate with the same key may have committed between our key check
                # and our read of the stages: then this is its replay, not a new report.
                earlier = await self._replayed(client, idempotency_key, fingerprint)
                if earlier is None:
                    raise
                return earlier
        raise Conflict(f"concurrent stage reports for application {application_id}")

    async def _replayed(
        self, client: str, key: str | None, fingerprint: str
    ) -> Created[StageChangeResource] | None:
        async with self._sessions() as session:
            return await replay(session, client, key, fingerprint, _stage_change)

    async def _record_stage(
        self,
        application_id: str,
        report: StageReport,
        client: str,
        key: str | None,
        fingerprint: str,
    ) -> Created[StageChangeResource]:
        async with transaction(self._sessions) as session:
            earlier = await replay(session, client, key, fingerprint, _stage_change)
            if earlier is not None:
                return earlier
            application = await session.get(Application, application_id)
            if application is None:
                raise NotFound(f"application {application_id} not found")
            history = (
                await session.scalars(
                    select(StageChange)
                    .where(StageChange.application_id == application_id)
                    .order_by(StageChange.seq)
                )
            ).all()
            now = utcnow()
            check_stage_transition(
                report,
                procedures=application.procedures,
                history=[Stage(row.stage) for row in history],
                received_at=application.received_at,
                now=now,
                clock_skew_s=self._settings.clock_skew_s,
            )
            case_no = await session.scalar(
                select(Case.case_no).where(Case.application_id == application_id)
            )
            change = StageChange(
                application_id=application_id,
                seq=history[-1].seq + 1 if history else 1,
                stage=report.stage.value,
                handler=report.handler,
                occurred_at=report.occurred_at or now,
                reason=report.reason,
                result_code=report.result_code,
                event_id=str(uuid.uuid4()),
                created_at=now,
                push_tracked_at=None if case_no else now,  # no case: nothing to push
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
                    # No personal data on the bus: the handler is read from the store.
                    data=resource.model_dump(mode="json", exclude={"handler"}),
                ),
            )
            if key:
                await remember(
                    session,
                    client=client,
                    key=key,
                    scope="progress",
                    fingerprint=fingerprint,
                    application_id=application_id,
                    resource_id=change.event_id,
                )
        return Created(resource, created=True)

    async def prepare_push(
        self, event: BaseCloudEvent, *, worker: str = "ywtb-status"
    ) -> Callable[[AsyncSession], Awaitable[None]] | None:
        """Push a stage change to its 一网通办 case; None if the application has no case.

        一网通办 takes the stages of a case only in sequence. When it answers "out
        of order" (it holds fewer stages than this one follows: a late or
        replayed push, or earlier ones dead-lettered), the stages it is missing
        are pushed first, in order, from the store, then this one. Nothing is
        recorded delivered that the platform did not accept: any other refusal
        propagates. The effect records the stages pushed along the way as
        delivered by ``worker``, since the platform now holds them.
        """
        if event.get_type() != ApplicationEvent.STAGE_CHANGED:
            return None
        async with self._sessions() as session:
            handler = await session.scalar(
                select(StageChange.handler).where(StageChange.event_id == event.get_id())
            )
        data = event.get_data()
        assert isinstance(data, dict)
        change = StageChangeResource.model_validate({**data, "handler": handler})
        if change.case_no is None:
            return None
        update = CaseStatusUpdate.model_validate(change.model_dump())
        filled = await self._push_in_order(update)

        async def delivered(session: AsyncSession) -> None:
            """The inbox and delivery record of this event say it arrived; so did ``filled``."""
            for earlier in filled:
                ref = DeliveryRef(
                    earlier.event_id, earlier.application_id, ApplicationEvent.STAGE_CHANGED
                )
                await record_delivery(session, worker, ref, DeliveryStatus.DELIVERED, 1)

        return delivered

    async def _push_in_order(self, update: CaseStatusUpdate) -> list[CaseStatusUpdate]:
        """Push ``update``, first the stages the case misses if needed; return those."""
        try:
            await self._sink.push_status(update)
            return []
        except PushOutOfOrder as exc:
            if exc.last_seq >= update.seq:
                raise  # the platform contradicts its own rule: never count that as delivered
            missing = await self._stage_updates(update, after=exc.last_seq)
            expected = list(range(exc.last_seq + 1, update.seq))
            if [m.seq for m in missing] != expected:
                raise Conflict(
                    f"case {update.case_no}: the store lacks stages {expected} "
                    f"that 一网通办 needs before {update.seq}",
                    last_seq=exc.last_seq,
                ) from exc
            log.warning(
                "case misses earlier stages: pushing them first",
                extra={"case_no": update.case_no, "seq": update.seq, "missing": expected},
            )
        for earlier in missing:
            await self._sink.push_status(earlier)
        await self._sink.push_status(update)
        return missing

    async def _stage_updates(
        self, update: CaseStatusUpdate, *, after: int
    ) -> list[CaseStatusUpdate]:
        """The recorded stages of ``update``'s application between ``after`` and it, in order."""
        async with self._sessions() as session:
            rows = (
                await session.scalars(
                    select(StageChange)
                    .where(
                        StageChange.application_id == update.application_id,
                        StageChange.seq > after,
                        StageChange.seq < update.seq,
                    )
                    .order_by(StageChange.seq)
                )
            ).all()
        return [
            CaseStatusUpdate.model_validate(
                {
                    **StageChangeResource.model_validate(row, from_attributes=True).model_dump(),
                    "case_no": update.case_no,
                }
            )
            for row in rows
        ]


async def _stage_change(session: AsyncSession, event_id: str) -> StageChangeResource | None:
    """A recorded stage change as it was first answered: its event's data (case number and
    the promised limit included) and the handler, which only the store keeps."""
    row = await session.scalar(select(StageChange).where(StageChange.event_id == event_id))
    event = await session.scalar(select(OutboxRow).where(OutboxRow.event_id == event_id))
    if row is None or event is None:
        return None
    return StageChangeResource.model_validate({**event.data, "handler": row.handler})
