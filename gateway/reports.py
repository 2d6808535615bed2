"""The World Bank "Getting Electricity" figures of a period, per customer class, and their chart.

The period is the dates (China Standard Time, both inclusive) on which
customers applied (``received_at``, indexed); everything else is read for
those applications only. Per class:

- ``applications``: how many applied; ``completed``: how many of them reached 办结.
- ``procedures_per_application``: the application's procedures, plus each 占掘路
  permit filed for it (the World Bank counts an excavation permit as a
  procedure of its own).
- ``documents_per_application``: what the customer was asked for: the
  credential (1), plus one for each 补正 request. The goal of 一证办电 is 1.
- ``days_median`` / ``days_p90`` (total and per stage) over completed
  applications, counted as their clock counts them (``day_kind``, pauses for
  the customer excluded); p90 is the nearest rank (the ⌈0.9·n⌉-th smallest).
- ``within_limit_share``: completed within their limit / completed.
- ``permit_turnaround_days_median``: calendar days from filing a permit to the
  road authority's decision, over decided permits.
- ``evidence_fetched`` / ``evidence_reused``: records fetched from a platform
  for the application vs taken from the evidence store.
- ``dossier_seconds_median``: seconds from the request's arrival to a complete
  dossier.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator, Sequence
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, Field
from sqlalchemy import select

from gateway.deadlines import DeadlineService
from gateway.store.db import Sessions
from gateway.store.models import Application, ApplicationEvidence, Permit, StageChange, utcnow
from schemas.chinatime import CHINA_STANDARD_TIME
from schemas.deadlines import (
    CustomerClass,
    DayKind,
    customer_class,
    rule_for,
)
from schemas.errors import InvalidInput
from schemas.stages import Stage

T = TypeVar("T")
MAX_PERIOD_DAYS = 3 * 366
CHUNK = 500
#: A voltage level standing for each class (to look up its rule).
CLASS_VOLTAGE = {
    CustomerClass.LOW_VOLTAGE: "0.4kV",
    CustomerClass.KV10: "10kV",
    CustomerClass.KV35_AND_ABOVE: "35kV",
}


class StageFigures(BaseModel):
    procedure: str
    limit_days: int | None
    completed: int = Field(description="completed applications that went through this stage")
    days_median: float | None
    days_p90: float | None


class ClassFigures(BaseModel):
    customer_class: CustomerClass
    limit_days: int = Field(description="the total limit in force on the period's last day")
    day_kind: DayKind
    applications: int
    completed: int
    procedures_per_application: float | None
    documents_per_application: float | None
    days_median: float | None
    days_p90: float | None
    within_limit_share: float | None
    stages: list[StageFigures]
    permits_decided: int
    permit_turnaround_days_median: float | None
    evidence_fetched: int
    evidence_reused: int
    dossier_seconds_median: float | None


class GettingElectricityReport(BaseModel):
    """``GET /api/v1/reports/getting-electricity``."""

    period_from: date
    period_to: date
    generated_at: datetime
    classes: list[ClassFigures]


def median(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 4) if values else None


def p90(values: Sequence[float]) -> float | None:
    """Nearest rank: the ⌈0.9·n⌉-th smallest."""
    if not values:
        return None
    return round(sorted(values)[math.ceil(0.9 * len(values)) - 1], 4)


def mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _cst_midnight(day: date) -> datetime:
    return datetime.combine(day, time(), CHINA_STANDARD_TIME)


class ReportService:
    def __init__(self, sessions: Sessions, deadlines: DeadlineService) -> None:
        self._sessions = sessions
        self._deadlines = deadlines

    async def getting_electricity(self, start: date, end: date) -> GettingElectricityReport:
        if end < start:
            raise InvalidInput("to", "is before from")
        if (end - start).days >= MAX_PERIOD_DAYS:
            raise InvalidInput("to", f"the period may be at most {MAX_PERIOD_DAYS} days")
        now = utcnow()
        async with self._sessions() as session:
            applications = (
                await session.scalars(
                    select(Application)
                    .where(
                        Application.received_at >= _cst_midnight(start),
                        Application.received_at < _cst_midnight(end + timedelta(days=1)),
                    )
                    .order_by(Application.received_at)
                )
            ).all()
            ids = [a.id for a in applications]
            changes: dict[str, list[StageChange]] = {}
            links: dict[str, list[ApplicationEvidence]] = {}
            permits: dict[str, list[Permit]] = {}
            for chunk in _chunks(ids):
                for change in await session.scalars(
                    select(StageChange).where(StageChange.application_id.in_(chunk))
                ):
                    changes.setdefault(change.application_id, []).append(change)
                for link in await session.scalars(
                    select(ApplicationEvidence).where(ApplicationEvidence.application_id.in_(chunk))
                ):
                    links.setdefault(link.application_id, []).append(link)
                for permit in await session.scalars(
                    select(Permit).where(Permit.application_id.in_(chunk))
                ):
                    permits.setdefault(permit.application_id, []).append(permit)
        by_class: dict[CustomerClass, list[Application]] = {k: [] for k in CustomerClass}
        for application in applications:
            level = str(application.request["request"]["voltage_level"])
            by_class[customer_class(level)].append(application)
        classes = []
        for klass, members in by_class.items():
            rule = rule_for(CLASS_VOLTAGE[klass], end)
            completed_days: list[float] = []
            within = 0
            stage_days: dict[str, list[float]] = {}
            stage_limits: dict[str, int | None] = {}
            procedures, documents, turnaround, dossier = [], [], [], []
            fetched = reused = 0
            for application in members:
                own = changes.get(application.id, [])
                own_permits = permits.get(application.id, [])
                procedures.append(len(application.procedures) + len(own_permits))
                supplements = sum(1 for c in own if c.stage == Stage.SUPPLEMENT_REQUESTED.value)
                documents.append(1 + supplements)
                clock = self._deadlines.compute(application, own, now)
                for stage in clock.stages:
                    stage_limits.setdefault(stage.procedure, stage.limit_days)
                if clock.stopped_by is Stage.COMPLETED:
                    completed_days.append(clock.elapsed_days)
                    within += clock.remaining_days is None or clock.remaining_days >= 0
                    for stage in clock.stages:
                        if stage.started_at is not None and stage.ended_at is not None:
                            stage_days.setdefault(stage.procedure, []).append(stage.elapsed_days)
                for permit in own_permits:
                    if permit.filed_at is not None and permit.decided_at is not None:
                        turnaround.append((permit.decided_at - permit.filed_at).total_seconds())
                for link in links.get(application.id, []):
                    if link.reused is True:
                        reused += 1
                    elif link.reused is False:
                        fetched += 1
                if application.dossier_completed_at is not None:
                    waited = application.dossier_completed_at - application.created_at
                    dossier.append(waited.total_seconds())
            classes.append(
                ClassFigures(
                    customer_class=klass,
                    limit_days=rule.total_days,
                    day_kind=rule.day_kind,
                    applications=len(members),
                    completed=len(completed_days),
                    procedures_per_application=mean(procedures),
                    documents_per_application=mean(documents),
                    days_median=median(completed_days),
                    days_p90=p90(completed_days),
                    within_limit_share=(
                        round(within / len(completed_days), 4) if completed_days else None
                    ),
                    stages=[
                        StageFigures(
                            procedure=procedure,
                            limit_days=limit,
                            completed=len(stage_days.get(procedure, [])),
                            days_median=median(stage_days.get(procedure, [])),
                            days_p90=p90(stage_days.get(procedure, [])),
                        )
                        for procedure, limit in stage_limits.items()
                    ],
                    permits_decided=len(turnaround),
                    permit_turnaround_days_median=median([s / 86400 for s in turnaround]),
                    evidence_fetched=fetched,
                    evidence_reused=reused,
                    dossier_seconds_median=median(dossier),
                )
            )
        return GettingElectricityReport(
            period_from=start, period_to=end, generated_at=now, classes=classes
        )


def write_chart(report: GettingElectricityReport, path: Path) -> None:
    """Days per customer class (median and p90 of completed applications) against the limits."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    labels = [f"{c.customer_class.value}\n({c.day_kind.value} days)" for c in report.classes]
    medians = [c.days_median or 0.0 for c in report.classes]
    p90s = [c.days_p90 or 0.0 for c in report.classes]
    limits = [c.limit_days for c in report.classes]
    positions = list(range(len(labels)))
    figure, axes = pyplot.subplots(figsize=(8, 4.5), dpi=100)
    try:
        axes.bar([x - 0.2 for x in positions], medians, width=0.4, label="median days")
        axes.bar([x + 0.2 for x in positions], p90s, width=0.4, label="p90 days")
        for x, limit in zip(positions, limits, strict=True):
            axes.hlines(limit, x - 0.45, x + 0.45, colors="red", linestyles="dashed")
            axes.annotate(f"limit {limit}", (x, limit), ha="center", va="bottom", color="red")
        for x, figures in zip(positions, report.classes, strict=True):
            axes.annotate(
                f"n={figures.completed}/{figures.applications}",
                (x, 0),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        axes.set_xticks(positions, labels)
        axes.set_ylabel("days (pauses for the customer excluded)")
        axes.set_title(
            f"Getting Electricity {report.period_from.isoformat()} to "
            f"{report.period_to.isoformat()}: days per customer class against the limits",
            fontsize=10,
        )
        axes.legend(loc="upper left")
        axes.set_ylim(0, max([*limits, *p90s]) * 1.15)
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png")
    finally:
        pyplot.close(figure)
