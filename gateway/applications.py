"""一证办电: turn one credential into a checked dossier.

``submit`` fetches the required evidence concurrently within the time budget,
then stores the application, its evidence and its events in one transaction.
Evidence not fetched in time stays ``pending``; the ``evidence`` worker
completes it from the ``received`` event, so a slow platform never fails the
request and a crash loses nothing.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, or_, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.access import Client
from gateway.deadlines import DeadlineService, stage_changes_of
from gateway.deliveries import DeliveryStatus
from gateway.evidence import SOURCE_PLATFORMS, Evidence, EvidenceService, keep
from gateway.idempotency import recall, remember
from gateway.outbox import add_event, add_events
from gateway.settings import EvidenceSettings
from gateway.store.db import Sessions, insert_new, transaction
from gateway.store.models import (
    Application,
    ApplicationEvidence,
    Case,
    Delivery,
    credential_index,
    utcnow,
)
from schemas.applications import (
    PROCEDURE_NAMES,
    Applicant,
    ApplicationFilter,
    ApplicationPage,
    ApplicationRequest,
    ApplicationResource,
    ApplicationStatus,
    DeliveryRecord,
    EvidenceKind,
    EvidenceRecord,
    EvidenceStatus,
    Procedure,
    ProcedureStep,
    Reason,
)
from schemas.credentials import CredentialType, credential_parts
from schemas.deadlines import Deadline
from schemas.dossier import (
    check_case_rules,
    procedures,
    record_of,
    required_evidence,
    review,
    subject_of,
    time_limit_days,
)
from schemas.errors import ConnectorError, InvalidInput, NotFound
from schemas.events import APPLICATION_EVENTS, ApplicationEvent, Event

log = logging.getLogger(__name__)

#: How far ahead of our clock a ``received_at`` may be (the sender's clock may run fast).
CLOCK_SKEW = timedelta(minutes=5)

#: What a fetch came to: the evidence, NOT_FOUND, or PENDING (not in time, or failed).
Outcome = Evidence | EvidenceStatus


def _status_after_review(reasons: list[Reason]) -> ApplicationStatus:
    return ApplicationStatus.REJECTED if reasons else ApplicationStatus.READY


def visible_to(client: Client) -> ColumnElement[bool]:
    """Ownership, the one rule: a client sees the applications it created; a client with
    ``applications:all`` sees every one (一网通办's cases included). Use it in every query
    that reads applications for a client; anything else answers 404 as if it did not exist."""
    return true() if client.sees_all else Application.owner == client.name


def with_case_no(query: Select[Application]) -> Select[Application, str | None]:
    """``query`` with each application's 一网通办 case number (None when it came by the API)."""
    return query.add_columns(Case.case_no).outerjoin(Case, Case.application_id == Application.id)


async def visible_application(
    session: AsyncSession, application_id: str, client: Client
) -> Application:
    """The application if ``client`` may see it; ``NotFound`` otherwise (also when it exists)."""
    application = await session.scalar(
        select(Application).where(Application.id == application_id, visible_to(client))
    )
    if application is None:
        raise NotFound(f"application {application_id} not found")
    return application


#: Rows a caller adds to the transaction that creates an application (given the answer).
AlsoWrite = Callable[[AsyncSession, ApplicationResource], None]


@dataclass(frozen=True)
class Submitted:
    application: ApplicationResource
    created: bool


class ApplicationService:
    def __init__(
        self,
        sessions: Sessions,
        evidence: EvidenceService,
        settings: EvidenceSettings,
        deadlines: DeadlineService,
    ) -> None:
        self._sessions = sessions
        self._evidence = evidence
        self._settings = settings
        self._deadlines = deadlines

    async def submit(
        self,
        request: ApplicationRequest,
        *,
        client: str,
        idempotency_key: str | None,
        received_at: datetime | None = None,
        also: AlsoWrite | None = None,
    ) -> Submitted:
        """At most one short read, then one transaction, and no session open while a
        platform is called.

        Evidence this process read from the store moments ago is reused without a
        query; only when some is not, one short session looks up the key and the
        stored evidence before the rest is fetched. The transaction stores the
        application, its evidence and its events together, and the answer is built
        from what it wrote. ``received_at`` starts the clock when the caller knows
        better than the request (a 一网通办 case: when it was filed); ``also`` adds the
        caller's own rows to that transaction, only when the application is created.
        """
        check_case_rules(request)
        if request.received_at is not None and request.received_at > utcnow() + CLOCK_SKEW:
            raise InvalidInput("received_at", "is in the future")
        body_hash = hashlib.sha256(request.model_dump_json().encode()).hexdigest()
        wanted = {kind: subject_of(kind, request) for kind in required_evidence(request)}
        stored = self._evidence.recent(wanted)
        key_checked = False
        if len(stored) < len(wanted):
            async with self._sessions() as session:
                if idempotency_key:
                    earlier = await self._replay(session, client, idempotency_key, body_hash)
                    if earlier is not None:
                        return Submitted(earlier, created=False)
                    key_checked = True
                unknown = {k: s for k, s in wanted.items() if k not in stored}
                stored |= await self._evidence.stored_in(session, unknown)
        outcomes: dict[EvidenceKind, Outcome] = {
            kind: stored.get(kind) or EvidenceStatus.PENDING for kind in wanted
        }
        outcomes |= await self._gather({k: s for k, s in wanted.items() if k not in stored})
        try:
            async with transaction(self._sessions) as session:
                if idempotency_key and not key_checked:
                    earlier = await self._replay(session, client, idempotency_key, body_hash)
                    if earlier is not None:
                        return Submitted(earlier, created=False)
                created = await self._create(
                    session, request, outcomes, owner=client, received_at=received_at
                )
                if also is not None:
                    also(session, created)
                if idempotency_key:
                    await remember(
                        session,
                        client=client,
                        key=idempotency_key,
                        scope="applications",
                        fingerprint=body_hash,
                        application_id=created.id,
                        resource_id=created.id,
                    )
        except IntegrityError:
            if not idempotency_key:
                raise
            # The same key raced us and won: answer what it created.
            async with self._sessions() as session:
                earlier = await self._replay(session, client, idempotency_key, body_hash)
            if earlier is None:
                raise
            return Submitted(earlier, created=False)
        return Submitted(created, created=True)

    async def _gather(self, wanted: dict[EvidenceKind, str]) -> dict[EvidenceKind, Outcome]:
        """Fetch every piece concurrently (no session open); what is not there within the
        budget is PENDING."""
        tasks = {
            kind: asyncio.create_task(self._evidence.fetch(kind, subject))
            for kind, subject in wanted.items()
        }
        if tasks:
            await asyncio.wait(tasks.values(), timeout=self._settings.budget_s)
        outcomes: dict[EvidenceKind, Outcome] = {}
        for kind, task in tasks.items():
            if not task.done():
                task.cancel()
                outcomes[kind] = EvidenceStatus.PENDING
                continue
            error = task.exception()
            if error is None:
                outcomes[kind] = task.result()
            elif isinstance(error, NotFound):
                outcomes[kind] = EvidenceStatus.NOT_FOUND
            elif isinstance(error, ConnectorError):
                log.warning(
                    "evidence left pending", extra={"kind": kind.value, "error": error.detail}
                )
                outcomes[kind] = EvidenceStatus.PENDING
            else:
                raise error
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        return outcomes

    async def _create(
        self,
        session: AsyncSession,
        request: ApplicationRequest,
        outcomes: dict[EvidenceKind, Outcome],
        *,
        owner: str,
        received_at: datetime | None = None,
    ) -> ApplicationResource:
        """Add the application, its evidence as it stands and its events to ``session``
        (written together at commit, no flush); return the resource they make."""
        now = utcnow()
        application = Application(
            id=str(uuid.uuid4()),
            owner=owner,
            status=ApplicationStatus.EVIDENCE_PENDING.value,
            credential_type=request.applicant.credential_type.value,
            credential_no=request.applicant.credential_no,
            credential_index=credential_index(
                request.applicant.credential_type.value, request.applicant.credential_no
            ),
            request=request.model_dump(mode="json"),
            procedures=[p.value for p in procedures(request)],
            time_limit_days=time_limit_days(request),
            reasons=[],
            created_at=now,
            updated_at=now,
            received_at=received_at or request.received_at or now,
        )
        clock = self._deadlines.compute(application, [], now)
        application.deadline_state = clock.state.value if clock.state else None
        application.due_at = clock.due_at
        kept = await _keep_fetched(session, outcomes)
        links = [
            ApplicationEvidence(
                application_id=application.id,
                kind=kind.value,
                subject=subject_of(kind, request),
                updated_at=now,
                **_evidence_values(outcome, kept),
            )
            for kind, outcome in outcomes.items()
        ]
        events = [
            Event(
                topic=APPLICATION_EVENTS,
                type=ApplicationEvent.RECEIVED,
                key=application.id,
                subject=application.id,
                data={
                    "application_id": application.id,
                    "credential_type": request.applicant.credential_type.value,
                    "district_code": request.site.district_code,
                    "business_type": request.request.business_type,
                    "voltage_level": request.request.voltage_level,
                    "capacity_kva": request.request.capacity_kva,
                    "project_code": request.project_code,
                    "required_evidence": [k.value for k in outcomes],
                },
            ),
            *(
                _evidence_fetched(application.id, outcome)
                for outcome in outcomes.values()
                if isinstance(outcome, Evidence)
            ),
        ]
        if EvidenceStatus.PENDING not in outcomes.values():
            reasons = review(
                request.applicant,
                {k: o.record for k, o in outcomes.items() if isinstance(o, Evidence)},
                [k for k, o in outcomes.items() if o is EvidenceStatus.NOT_FOUND],
            )
            status = _status_after_review(reasons)
            application.status = status.value
            application.reasons = [r.model_dump(mode="json") for r in reasons]
            application.dossier_completed_at = now
            events.append(_completion(application.id, status, reasons))
        await insert_new(session, application, *links)
        await add_events(session, events)
        return _resource(
            application, sorted(links, key=lambda link: link.kind), deadline=clock, request=request
        )

    async def check_visible(self, application_id: str, client: Client) -> None:
        """``NotFound`` unless ``client`` may see the application (see ``visible_to``)."""
        async with self._sessions() as session:
            await visible_application(session, application_id, client)

    async def get(self, application_id: str, client: Client | None = None) -> ApplicationResource:
        """The application; as ``client`` sees it when given (``NotFound`` if not its own)."""
        async with self._sessions() as session:
            return await self._load(session, application_id, client)

    async def _replay(
        self, session: AsyncSession, client: str, key: str, body_hash: str
    ) -> ApplicationResource | None:
        """What an earlier request with this key created, or None."""
        earlier = await recall(session, client, key, body_hash)
        return None if earlier is None else await self._load(session, earlier.application_id)

    async def _load(
        self, session: AsyncSession, application_id: str, client: Client | None = None
    ) -> ApplicationResource:
        """The application as the API answers it (as ``client`` sees it, when given)."""
        found = (
            await session.execute(
                with_case_no(select(Application)).where(
                    Application.id == application_id,
                    true() if client is None else visible_to(client),
                )
            )
        ).first()
        if found is None:
            raise NotFound(f"application {application_id} not found")
        application, case_no = found
        resource = (await self._resources(session, [(application, case_no)]))[0]
        jobs = await unfinished_jobs(session, application_id)
        return resource.model_copy(update={"jobs": jobs})

    async def search(
        self, filters: ApplicationFilter, *, client: Client, cursor: str | None, limit: int
    ) -> ApplicationPage:
        """Applications the client may see, oldest first, ``limit`` per page."""
        query = with_case_no(select(Application))
        if filters.case_no is not None:
            query = query.where(Case.case_no == filters.case_no)
        if filters.status is not None:
            query = query.where(Application.status == filters.status.value)
        if filters.deadline_state is not None:
            query = query.where(Application.deadline_state == filters.deadline_state.value)
        if filters.credential_no is not None:  # encrypted at rest: found by its blind index
            query = query.where(
                Application.credential_index.in_(
                    [credential_index(t.value, filters.credential_no) for t in CredentialType]
                )
            )
        if filters.created_from is not None:
            query = query.where(Application.created_at >= filters.created_from)
        if filters.created_to is not None:
            query = query.where(Application.created_at < filters.created_to)
        if cursor is not None:
            created_at, after_id = _read_cursor(cursor)
            query = query.where(
                or_(
                    Application.created_at > created_at,
                    (Application.created_at == created_at) & (Application.id > after_id),
                )
            )
        query = query.where(visible_to(client)).order_by(Application.created_at, Application.id)
        async with self._sessions() as session:
            rows = [(a, case_no) for a, case_no in await session.execute(query.limit(limit + 1))]
            page = rows[:limit]
            items = await self._resources(session, page)
        more = len(rows) > limit
        return ApplicationPage(items=items, next_cursor=_cursor(page[-1][0]) if more else None)

    async def _resources(
        self, session: AsyncSession, found: list[tuple[Application, str | None]]
    ) -> list[ApplicationResource]:
        """The resources of applications (with their case numbers), their evidence and clock
        read in bulk."""
        ids = [a.id for a, _ in found]
        links: dict[str, list[ApplicationEvidence]] = {}
        for link in await session.scalars(
            select(ApplicationEvidence)
            .where(ApplicationEvidence.application_id.in_(ids))
            .order_by(ApplicationEvidence.kind)
            .execution_options(populate_existing=True)
        ):
            links.setdefault(link.application_id, []).append(link)
        changes = await stage_changes_of(session, ids)
        now = utcnow()
        return [
            _resource(
                a,
                links.get(a.id, []),
                case_no=case_no,
                deadline=self._deadlines.compute(a, changes.get(a.id, []), now),
            )
            for a, case_no in found
        ]

    async def prepare_completion(
        self, application_id: str
    ) -> Callable[[AsyncSession], Awaitable[None]] | None:
        """Fetch what an application still waits for; return the effect that records it.

        Used by the ``evidence`` worker. Transient failures propagate (the
        message is retried); the effect is a no-op if another path completed
        the evidence first. One short session reads what is pending and what
        the store already holds; the platforms are called with none open.
        """
        async with self._sessions() as session:
            pending = (
                await session.scalars(
                    select(ApplicationEvidence).where(
                        ApplicationEvidence.application_id == application_id,
                        ApplicationEvidence.status == EvidenceStatus.PENDING.value,
                    )
                )
            ).all()
            wanted = {EvidenceKind(link.kind): link.subject for link in pending}
            stored = await self._evidence.stored_in(session, wanted)
        if not wanted:
            return None
        outcomes: dict[EvidenceKind, Outcome] = dict(stored)
        for kind, subject in wanted.items():
            if kind in stored:
                continue
            try:
                outcomes[kind] = await self._evidence.fetch(kind, subject)
            except NotFound:
                outcomes[kind] = EvidenceStatus.NOT_FOUND

        async def effect(session: AsyncSession) -> None:
            await record_outcomes(session, application_id, outcomes)

        return effect


async def unfinished_jobs(session: AsyncSession, application_id: str) -> list[DeliveryRecord]:
    """The application's events a worker is still retrying or has dead-lettered, with why."""
    rows = await session.scalars(
        select(Delivery)
        .where(
            Delivery.application_id == application_id,
            Delivery.status.in_([DeliveryStatus.RETRYING.value, DeliveryStatus.DEAD.value]),
        )
        .order_by(Delivery.updated_at, Delivery.worker)
    )
    return [DeliveryRecord.model_validate(row, from_attributes=True) for row in rows]


async def record_outcomes(
    session: AsyncSession, application_id: str, outcomes: dict[EvidenceKind, Outcome]
) -> None:
    """Record fetched evidence on the application, and complete its dossier when nothing waits.

    Only evidence still ``pending`` is updated, and only an application still
    ``evidence_pending`` is completed, so a second path to the same result
    changes nothing and emits nothing.
    """
    now = utcnow()
    kept = await _keep_fetched(session, outcomes)
    for kind, outcome in outcomes.items():
        if outcome is EvidenceStatus.PENDING:
            continue
        result = await session.execute(
            update(ApplicationEvidence)
            .where(
                ApplicationEvidence.application_id == application_id,
                ApplicationEvidence.kind == kind.value,
                ApplicationEvidence.status == EvidenceStatus.PENDING.value,
            )
            .values(updated_at=now, **_evidence_values(outcome, kept))
        )
        if result.rowcount == 1 and isinstance(outcome, Evidence):  # type: ignore[attr-defined]
            add_event(session, _evidence_fetched(application_id, outcome))
    await _complete_if_ready(session, application_id)


async def _keep_fetched(
    session: AsyncSession, outcomes: dict[EvidenceKind, Outcome]
) -> dict[EvidenceKind, int]:
    """Keep the records among ``outcomes`` in the evidence store (one statement); their
    row ids by kind."""
    return await keep(session, *(o for o in outcomes.values() if isinstance(o, Evidence)))


def _evidence_values(outcome: Outcome, kept: dict[EvidenceKind, int]) -> dict[str, Any]:
    """The columns of an application's evidence as ``outcome`` leaves it (``kept``: the
    evidence store's row ids by kind)."""
    if isinstance(outcome, Evidence):
        return {
            "status": EvidenceStatus.FETCHED.value,
            "evidence_id": kept[outcome.kind],
            "record": outcome.snapshot(),
            "reused": outcome.from_store,
        }
    return {"status": outcome.value, "evidence_id": None, "record": None, "reused": None}


def _evidence_fetched(application_id: str, evidence: Evidence) -> Event:
    return Event(
        topic=APPLICATION_EVENTS,
        type=ApplicationEvent.EVIDENCE_FETCHED,
        key=application_id,
        subject=application_id,
        data={
            "application_id": application_id,
            "kind": evidence.kind.value,
            "subject": evidence.subject,
            "reused": evidence.from_store,
            "fetched_at": evidence.fetched_at.isoformat(),
        },
    )


def _completion(application_id: str, status: ApplicationStatus, reasons: list[Reason]) -> Event:
    """The event of a dossier complete with ``status``: completed (ready) or rejected."""
    completed = status is ApplicationStatus.READY
    return Event(
        topic=APPLICATION_EVENTS,
        type=ApplicationEvent.DOSSIER_COMPLETED if completed else ApplicationEvent.REJECTED,
        key=application_id,
        subject=application_id,
        data={
            "application_id": application_id,
            "status": status.value,
            "reasons": [r.model_dump(mode="json") for r in reasons],
        },
    )


async def _complete_if_ready(session: AsyncSession, application_id: str) -> None:
    links = (
        await session.scalars(
            select(ApplicationEvidence).where(ApplicationEvidence.application_id == application_id)
        )
    ).all()
    if any(link.status == EvidenceStatus.PENDING.value for link in links):
        return
    application = await session.get(Application, application_id)
    assert application is not None
    records = {
        EvidenceKind(link.kind): record_of(EvidenceKind(link.kind), link.record["fields"])
        for link in links
        if link.record
    }
    missing = [
        EvidenceKind(link.kind) for link in links if link.status == EvidenceStatus.NOT_FOUND.value
    ]
    applicant = Applicant(
        credential_type=application.credential_type, credential_no=application.credential_no
    )
    reasons = review(applicant, records, missing)
    status = _status_after_review(reasons)
    result = await session.execute(
        update(Application)
        .where(
            Application.id == application_id,
            Application.status == ApplicationStatus.EVIDENCE_PENDING.value,
        )
        .values(
            status=status.value,
            reasons=[r.model_dump(mode="json") for r in reasons],
            updated_at=utcnow(),
            dossier_completed_at=utcnow(),
        )
    )
    if result.rowcount == 1:  # type: ignore[attr-defined]
        add_event(session, _completion(application_id, status, reasons))


def _cursor(last: Application) -> str:
    text = f"{last.created_at.isoformat()}|{last.id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _read_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, application_id = text.split("|", 1)
        return datetime.fromisoformat(created_at), application_id
    except ValueError as exc:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise InvalidInput("cursor", "not a cursor this API gave out") from exc


def _resource(
    application: Application,
    links: list[ApplicationEvidence],
    *,
    case_no: str | None = None,
    deadline: Deadline | None = None,
    request: ApplicationRequest | None = None,
) -> ApplicationResource:
    """The resource of ``application``; ``request`` is its request when the caller holds it
    (else it is read back from the row)."""
    request = request or ApplicationRequest.model_validate(application.request)
    evidence = [
        EvidenceRecord(
            kind=EvidenceKind(link.kind),
            subject=link.subject,
            status=EvidenceStatus(link.status),
            **(link.record or {"source_platform": SOURCE_PLATFORMS[EvidenceKind(link.kind)]}),
        )
        for link in links
    ]
    return ApplicationResource(
        id=application.id,
        status=ApplicationStatus(application.status),
        applicant=request.applicant,
        applicant_parts=credential_parts(
            request.applicant.credential_type, request.applicant.credential_no
        ),
        site=request.site,
        request=request.request,
        project_code=request.project_code,
        procedures=[
            ProcedureStep(code=Procedure(p), name=PROCEDURE_NAMES[Procedure(p)])
            for p in application.procedures
        ],
        time_limit_days=application.time_limit_days,
        reasons=[Reason.model_validate(r) for r in application.reasons],
        evidence=evidence,
        created_at=application.created_at,
        updated_at=application.updated_at,
        received_at=application.received_at,
        case_no=case_no,
        deadline=deadline,
    )
