"""The customer's clock in the store: deadline state, and the job that warns and chases (催办).

The clock itself is pure (``schemas.deadlines``); this module feeds it the
application's stage changes and keeps two things in the store:

- the state as of the last evaluation on the application row
  (``deadline_state``, ``due_at``, ``closed_at``), for filtering lists;
  ``GET /api/v1/applications/{id}`` computes it afresh;
- one ``deadline_alerts`` row per (application, scope, threshold), inserted in
  the transaction of its event: the unique key makes each threshold announce
  itself exactly once, across restarts and with several replicas running the
  job (a duplicate insert means another replica did it, and rolls back).

Scopes are ``total`` and each stage with a limit of its own. Passing the total
limit is ``deadline_overdue``; any other threshold, a stage's limit included,
is ``deadline_warning``. When several thresholds are passed at once (a job
that was down, a back-dated case) only the highest is announced.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.outbox import add_event
from gateway.settings import DeadlineSettings
from gateway.store.db import Sessions, transaction
from gateway.store.models import Application, Case, DeadlineAlert, StageChange, utcnow
from gateway.supervise import Beat, LoopBody, periodic
from schemas.applications import ApplicationStatus, Procedure
from schemas.deadlines import Calendar, Clock, Deadline, StageMark, deadline, thresholds_crossed
from schemas.events import APPLICATION_EVENTS, ApplicationEvent, Event
from schemas.stages import Stage

if TYPE_CHECKING:
    from gateway.bootstrap import Container

log = logging.getLogger(__name__)

TOTAL = "total"
OVERDUE = 1.0


def threshold_key(share: float) -> str:
    """A threshold as stored and sent: ``0.5``, ``0.8``, ``1.0``."""
    return str(float(share))


async def stage_changes_of(session: AsyncSession, ids: list[str]) -> dict[str, list[StageChange]]:
    """The stage changes of each of ``ids``, read in bulk."""
    changes: dict[str, list[StageChange]] = {}
    for change in await session.scalars(
        select(StageChange).where(StageChange.application_id.in_(ids))
    ):
        changes.setdefault(change.application_id, []).append(change)
    return changes


async def stages_and_cases(
    session: AsyncSession, ids: list[str]
) -> tuple[dict[str, list[StageChange]], dict[str, str]]:
    """The stage changes and the 一网通办 case number of each of ``ids``, read in bulk."""
    changes = await stage_changes_of(session, ids)
    cases: dict[str, str] = {
        row[0]: row[1]
        for row in await session.execute(
            select(Case.application_id, Case.case_no).where(Case.application_id.in_(ids))
        )
    }
    return changes, cases


class DeadlineService:
    def __init__(self, sessions: Sessions, settings: DeadlineSettings, calendar: Calendar) -> None:
        self._sessions = sessions
        self._settings = settings
        self.calendar = calendar

    def compute(
        self, application: Application, changes: Sequence[StageChange], now: datetime | None = None
    ) -> Deadline:
        """The deadline of ``application`` given its stage changes (any order)."""
        ordered = sorted(changes, key=lambda c: c.seq)
        return deadline(
            voltage_level=str(application.request["request"]["voltage_level"]),
            procedures=[Procedure(p) for p in application.procedures],
            started_at=application.received_at,
            marks=[StageMark(Stage(c.stage), c.occurred_at, c.reason) for c in ordered],
            calendar=self.calendar,
            now=now or utcnow(),
            warning_share=self._settings.warning_share,
        )

    async def record(self, session: AsyncSession, application_id: str) -> Deadline:
        """Recompute after a stage change, in its transaction; keep the state on the row."""
        application = await session.get(Application, application_id)
        assert application is not None
        changes = (
            await session.scalars(
                select(StageChange).where(StageChange.application_id == application_id)
            )
        ).all()
        clock = self.compute(application, changes)
        application.deadline_state = clock.state.value if clock.state else None
        application.due_at = clock.due_at
        application.closed_at = clock.ended_at
        return clock

    async def evaluate(self, now: datetime | None = None) -> Counter[str]:
        """One round of the job over every open application.

        Returns how many of each were done: ``evaluated`` applications,
        ``deadline_warning`` and ``deadline_overdue`` events emitted,
        ``already_announced`` (another replica won the insert).
        """
        now = now or utcnow()
        counts: Counter[str] = Counter()
        after = ""
        while True:
            async with self._sessions() as session:
                batch = (
                    await session.scalars(
                        select(Application)
                        .where(
                            Application.closed_at.is_(None),
                            Application.status != ApplicationStatus.REJECTED.value,
                            Application.id > after,
                        )
                        .order_by(Application.id)
                        .limit(self._settings.batch_size)
                    )
                ).all()
                if not batch:
                    return counts
                ids = [a.id for a in batch]
                changes, cases = await stages_and_cases(session, ids)
                known = {
                    (a.application_id, a.scope, a.threshold)
                    for a in await session.scalars(
                        select(DeadlineAlert).where(DeadlineAlert.application_id.in_(ids))
                    )
                }
            for application in batch:
                counts["evaluated"] += 1
                clock = self.compute(application, changes.get(application.id, []), now)
                state = clock.state.value if clock.state else None
                if (state, clock.due_at) != (application.deadline_state, application.due_at):
                    await self._keep_state(application.id, clock)
                scopes: list[tuple[str, Clock]] = [(TOTAL, clock)]
                scopes += [(s.procedure, s) for s in clock.stages]
                for scope, scope_clock in scopes:
                    crossed = [
                        threshold_key(share)
                        for share in thresholds_crossed(scope_clock, self._settings.thresholds)
                    ]
                    new = [t for t in crossed if (application.id, scope, t) not in known]
                    if new:
                        counts[
                            await self._announce(
                                application.id, cases.get(application.id), scope, scope_clock, new
                            )
                        ] += 1
            after = ids[-1]

    async def _keep_state(self, application_id: str, clock: Deadline) -> None:
        async with transaction(self._sessions) as session:
            await session.execute(
                update(Application)
                .where(Application.id == application_id, Application.closed_at.is_(None))
                .values(
                    deadline_state=clock.state.value if clock.state else None, due_at=clock.due_at
                )
            )

    async def _announce(
        self,
        application_id: str,
        case_no: str | None,
        scope: str,
        clock: Clock,
        thresholds: list[str],
    ) -> str:
        """Record the thresholds passed and announce the highest; what it came to (a count key)."""
        highest = thresholds[-1]
        # Overdue is the promise to the customer broken: the total limit. A stage past its
        # own limit is a warning (the case may still make its total).
        overdue = scope == TOTAL and highest == threshold_key(OVERDUE)
        kind = "deadline_overdue" if overdue else "deadline_warning"
        event_type = (
            ApplicationEvent.DEADLINE_OVERDUE if overdue else ApplicationEvent.DEADLINE_WARNING
        )
        event = Event(
            topic=APPLICATION_EVENTS,
            type=event_type,
            key=application_id,
            subject=application_id,
            data={
                "application_id": application_id,
                "case_no": case_no,
                "scope": scope,
                "threshold": float(highest),
                "state": clock.state.value if clock.state else None,
                "limit_days": clock.limit_days,
                "day_kind": clock.day_kind.value,
                "started_at": clock.started_at.isoformat() if clock.started_at else None,
                "due_at": clock.due_at.isoformat() if clock.due_at else None,
                "elapsed_days": clock.elapsed_days,
                "remaining_days": clock.remaining_days,
            },
        )
        try:
            async with transaction(self._sessions) as session:
                for threshold in thresholds:
                    session.add(
                        DeadlineAlert(
                            application_id=application_id,
                            scope=scope,
                            threshold=threshold,
                            event_id=event.id if threshold == highest else None,
                            created_at=utcnow(),
                        )
                    )
                await session.flush()
                add_event(session, event)
        except IntegrityError:
            return "already_announced"  # another replica passed it first, with its event
        log.info(
            "deadline threshold passed",
            extra={"application_id": application_id, "scope": scope, "threshold": highest},
        )
        return kind


def deadline_job(container: Container) -> LoopBody:
    """The periodic deadline job as a loop body for ``supervise`` (``deadlines.interval_s``)."""
    interval_s = container.settings.deadlines.interval_s

    async def run(stop: asyncio.Event, beat: Beat) -> None:
        await periodic(stop, beat, interval_s, container.deadlines.evaluate)

    return run
