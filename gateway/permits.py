"""占掘路: permits for an application's external works, filed now and decided later.

``request`` records the permit and a ``permit.requested`` event; the ``permits``
worker files it with the road authority; the authority's decision arrives as a
signed callback and is applied once (``apply_decision``), with a
``permit.decided`` event that the ``marketing`` worker relays.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.ports import PermitAuthority
from gateway.callbacks import keep_callback
from gateway.idempotency import Created, remember, replay, request_hash
from gateway.outbox import add_event
from gateway.store.db import Sessions, transaction
from gateway.store.models import (
    Application,
    ApplicationEvidence,
    Permit,
    utcnow,
)
from schemas.applications import ApplicationStatus, EvidenceKind, Procedure
from schemas.errors import Conflict, NotFound
from schemas.events import PERMIT_EVENTS, Event, PermitEvent
from schemas.permits import (
    PermitDecision,
    PermitOutcome,
    PermitRequest,
    PermitResource,
    PermitStatus,
    PermitWorks,
)


class PermitService:
    def __init__(self, sessions: Sessions, authority: PermitAuthority) -> None:
        self._sessions = sessions
        self._authority = authority

    async def request(
        self,
        application_id: str,
        works: PermitWorks,
        *,
        client: str = "",
        idempotency_key: str | None = None,
    ) -> Created[PermitResource]:
        """Record a permit application for the external works of a ready application.

        With ``idempotency_key``, a repeat of the same request answers the permit
        the first one created (``created`` False) and records nothing more.
        """
        fingerprint = request_hash("permits", application_id, works.model_dump_json())
        try:
            return await self._request(application_id, works, client, idempotency_key, fingerprint)
        except IntegrityError:
            if not idempotency_key:
                raise
            # The same key raced us and won: answer what it created.
            return await self._request(application_id, works, client, idempotency_key, fingerprint)

    async def _request(
        self,
        application_id: str,
        works: PermitWorks,
        client: str,
        key: str | None,
        fingerprint: str,
    ) -> Created[PermitResource]:
        async with transaction(self._sessions) as session:
            earlier = await replay(session, client, key, fingerprint, _stored)
            if earlier is not None:
                return earlier
            application = await session.get(Application, application_id)
            if application is None:
                raise NotFound(f"application {application_id} not found")
            if Procedure.EXTERNAL_WORKS.value not in application.procedures:
                raise Conflict(f"application {application_id} has no external works (外部工程)")
            if application.status != ApplicationStatus.READY.value:
                raise Conflict(f"application {application_id} is {application.status}, not ready")
            licence = await session.get(
                ApplicationEvidence, (application_id, EvidenceKind.LICENCE.value)
            )
            builder = licence.record["fields"]["name"] if licence and licence.record else ""
            request = PermitRequest(
                application_id=application_id,
                builder_name=builder or application.credential_no,
                builder_uscc=application.credential_no,
                district_code=application.request["site"]["district_code"],
                **works.model_dump(),
            )
            now = utcnow()
            permit = Permit(
                id=str(uuid.uuid4()),
                application_id=application_id,
                status=PermitStatus.REQUESTED.value,
                request=request.model_dump(mode="json"),
                created_at=now,
                updated_at=now,
            )
            session.add(permit)
            add_event(session, _event(PermitEvent.REQUESTED, permit, {}))
            if key:
                await remember(
                    session,
                    client=client,
                    key=key,
                    scope="permits",
                    fingerprint=fingerprint,
                    application_id=application_id,
                    resource_id=permit.id,
                )
        return Created(_resource(permit), created=True)

    async def get(self, permit_id: str) -> PermitResource:
        async with self._sessions() as session:
            permit = await session.get(Permit, permit_id)
        if permit is None:
            raise NotFound(f"permit {permit_id} not found")
        return _resource(permit)

    async def prepare_filing(
        self, permit_id: str
    ) -> Callable[[AsyncSession], Awaitable[None]] | None:
        """File a requested permit with the authority; the effect records the filing."""
        async with self._sessions() as session:
            permit = await session.get(Permit, permit_id)
        if permit is None or permit.status != PermitStatus.REQUESTED.value:
            return None
        filing = await self._authority.file_permit(PermitRequest.model_validate(permit.request))

        async def effect(session: AsyncSession) -> None:
            result = await session.execute(
                update(Permit)
                .where(Permit.id == permit_id, Permit.status == PermitStatus.REQUESTED.value)
                .values(
                    status=PermitStatus.FILED.value,
                    filing_no=filing.filing_no,
                    filed_at=filing.filed_at,
                    updated_at=utcnow(),
                )
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                filed = await session.get(Permit, permit_id)
                assert filed is not None
                add_event(
                    session, _event(PermitEvent.FILED, filed, {"filing_no": filing.filing_no})
                )

        return effect

    async def apply_decision(
        self, decision: PermitDecision, app_id: str, body: dict[str, Any]
    ) -> bool:
        """Apply the authority's decision once; False if this decision was applied before."""
        try:
            async with transaction(self._sessions) as session:
                keep_callback(session, "permit", decision.filing_no, app_id, body)
                await session.flush()
                permit = await session.scalar(
                    select(Permit).where(Permit.filing_no == decision.filing_no)
                )
                if permit is None:
                    raise NotFound(f"no permit filed as {decision.filing_no}")
                approved = decision.outcome is PermitOutcome.APPROVED
                permit.status = (PermitStatus.APPROVED if approved else PermitStatus.REFUSED).value
                permit.permit_no = decision.permit_no
                permit.valid_from = decision.valid_from
                permit.valid_to = decision.valid_to
                permit.reason = decision.reason
                permit.decided_at = decision.decided_at
                permit.updated_at = utcnow()
                add_event(
                    session,
                    _event(
                        PermitEvent.DECIDED,
                        permit,
                        {
                            "filing_no": decision.filing_no,
                            "outcome": decision.outcome.value,
                            "permit_no": decision.permit_no,
                            "valid_from": _iso(decision.valid_from),
                            "valid_to": _iso(decision.valid_to),
                            "reason": decision.reason,
                            "decided_at": decision.decided_at.isoformat(),
                        },
                    ),
                )
        except IntegrityError:
            return False  # the same decision, delivered again: acknowledged, not applied
        return True


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _event(kind: str, permit: Permit, extra: dict[str, Any]) -> Event:
    return Event(
        topic=PERMIT_EVENTS,
        type=kind,
        key=permit.application_id,
        subject=permit.id,
        data={"permit_id": permit.id, "application_id": permit.application_id, **extra},
    )


def _resource(permit: Permit) -> PermitResource:
    return PermitResource.model_validate(permit, from_attributes=True)


async def _stored(session: AsyncSession, permit_id: str) -> PermitResource | None:
    permit = await session.get(Permit, permit_id)
    return None if permit is None else _resource(permit)
