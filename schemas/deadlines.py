"""The customer's clock: the rules of time (时限) and the deadline state of an application.

Pure code: no store, no network, no wall clock (``now`` is an argument).

**Rules of time** (``TIME_RULES``): per customer class — low-voltage small and
micro enterprises (低压小微企业, 0.4 kV), 10 kV, 35 kV and above — the total
limit and the per-stage limits, with the date they apply from and whether
they count calendar or working days (工作日):

| class | from | total | per stage |
|---|---|---|---|
| low voltage (小微) | 2019-01-01 | 15 working days | external works 5 |
| low voltage (小微) | 2020-01-01 | 10 working days | external works 5 |
| low voltage (小微) | 2024-12-31 | 10 working days | acceptance 1, external works 5 |
| 10 kV | 2019-01-01 | 70 working days | external works 30 |
| 10 kV | 2020-01-01 | 60 working days | external works 30 |
| 35 kV and above | 2019-01-01 | 160 working days | — |
| 35 kV and above | 2020-01-01 | 150 working days | — |

(2019 and 2020: the State Grid Shanghai action plan; 2024-12-31: Shanghai's
measures for low-voltage connections, application handled within 1 day.) A
stage without a limit counts only against the total.

**The clock** (``deadline``) starts when the customer applied. Stage reports
move the case through its procedures: 受理 (``accepted``) ends 申请受理, a later
stage's report ends every stage before it, 办结 or 不予受理 stops the clock. A
stage starts when the one before it ended. 补正 (``supplement_requested``)
pauses the clock (and the running stage) until the next report that is not
补正; every pause keeps its reason. Time is counted continuously in China
Standard Time: a counted day contributes its hours, a day that is not counted
(a weekend or holiday, for working days) contributes nothing, so one working
day from Friday 10:00 is due on Monday 10:00.

**Calendar files** (``schemas/calendars/*.json``, one per year; operations add
one with ``YWTB_DEADLINES_CALENDAR_FILES``)::

    {"year": 2026,
     "source": "国务院办公厅关于2026年部分节假日安排的通知（…）",
     "holidays": ["2026-01-01", ...],          # days off, weekdays or not
     "working_weekends": ["2026-01-04", ...]}  # 调休: a Saturday/Sunday worked

A day is a working day if it is a working weekend day, or a Monday–Friday
that is not a holiday. A year without a file counts Monday–Friday only
(``Calendar.covers`` tells).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from schemas.chinatime import CHINA_STANDARD_TIME, in_china_time
from schemas.stages import Stage

CALENDAR_DIR = Path(__file__).with_name("calendars")
DAY_S = 86400.0
_ONE_DAY = timedelta(days=1)


class CustomerClass(StrEnum):
    LOW_VOLTAGE = "low_voltage"  # 低压小微企业 (0.4 kV, ≤ 160 kW)
    KV10 = "10kV"
    KV35_AND_ABOVE = "35kV_and_above"


class DayKind(StrEnum):
    CALENDAR = "calendar"  # 自然日
    WORKING = "working"  # 工作日


class DeadlineState(StrEnum):
    ON_TRACK = "on_track"
    WARNING = "warning"
    OVERDUE = "overdue"
    PAUSED = "paused"
    MET = "met"


def customer_class(voltage_level: str) -> CustomerClass:
    if voltage_level == "0.4kV":
        return CustomerClass.LOW_VOLTAGE
    return CustomerClass.KV10 if voltage_level == "10kV" else CustomerClass.KV35_AND_ABOVE


@dataclass(frozen=True)
class TimeRule:
    """The limits of one customer class from a date on (``stages``: procedure → days)."""

    customer_class: CustomerClass
    applies_from: date
    total_days: int
    day_kind: DayKind
    stages: dict[str, int] = field(default_factory=dict)
    """Per-stage limits by procedure code (``schemas.applications.Procedure``)."""


_W = DayKind.WORKING
_LOW, _K10, _K35 = CustomerClass.LOW_VOLTAGE, CustomerClass.KV10, CustomerClass.KV35_AND_ABOVE
# Procedure codes (``schemas.applications.Procedure``, which imports this module).
ACCEPTANCE, SURVEY_AND_PLAN = "acceptance", "survey_and_plan"
EXTERNAL_WORKS, METERING_AND_CONNECTION = "external_works", "metering_and_connection"
_ACC, _EXT = ACCEPTANCE, EXTERNAL_WORKS

#: The rules of time, oldest first per class (see the module docstring).
TIME_RULES: tuple[TimeRule, ...] = (
    TimeRule(_LOW, date(2019, 1, 1), 15, _W, {_EXT: 5}),
    TimeRule(_LOW, date(2020, 1, 1), 10, _W, {_EXT: 5}),
    TimeRule(_LOW, date(2024, 12, 31), 10, _W, {_ACC: 1, _EXT: 5}),
    TimeRule(_K10, date(2019, 1, 1), 70, _W, {_EXT: 30}),
    TimeRule(_K10, date(2020, 1, 1), 60, _W, {_EXT: 30}),
    TimeRule(_K35, date(2019, 1, 1), 160, _W),
    TimeRule(_K35, date(2020, 1, 1), 150, _W),
)


def rule_for(voltage_level: str, on: date) -> TimeRule:
    """The rule in force on ``on`` at ``voltage_level`` (before 2019: the oldest)."""
    klass = customer_class(voltage_level)
    rules = [r for r in TIME_RULES if r.customer_class is klass]
    in_force = [r for r in rules if r.applies_from <= on]
    return in_force[-1] if in_force else rules[0]


# --- calendar ----------------------------------------------------------------


class CalendarYear(BaseModel):
    """One calendar file: the State Council's holiday notice of a year."""

    model_config = ConfigDict(extra="forbid")

    year: int
    source: str = Field(min_length=1, description="the notice the days are taken from")
    holidays: list[date]
    working_weekends: list[date] = Field(description="调休: weekend days that are worked")


@dataclass(frozen=True)
class Calendar:
    """Working days: Monday–Friday, less holidays, plus the weekend days made working (调休)."""

    holidays: frozenset[date] = frozenset()
    working_weekends: frozenset[date] = frozenset()
    years: frozenset[int] = frozenset()
    sources: dict[int, str] = field(default_factory=dict)

    def is_working_day(self, day: date) -> bool:
        if day in self.working_weekends:
            return True
        return day.weekday() < 5 and day not in self.holidays

    def covers(self, day: date) -> bool:
        """True if a calendar file for ``day``'s year was loaded."""
        return day.year in self.years

    @classmethod
    def of(cls, years: Iterable[CalendarYear]) -> Calendar:
        years = list(years)
        for year in years:
            wrong = [d for d in [*year.holidays, *year.working_weekends] if d.year != year.year]
            if wrong:
                raise ValueError(f"calendar {year.year}: {wrong[0].isoformat()} is another year")
            weekdays = [d for d in year.working_weekends if d.weekday() < 5]
            if weekdays:
                raise ValueError(
                    f"calendar {year.year}: working_weekends {weekdays[0].isoformat()} is a weekday"
                )
        return cls(
            holidays=frozenset(d for y in years for d in y.holidays),
            working_weekends=frozenset(d for y in years for d in y.working_weekends),
            years=frozenset(y.year for y in years),
            sources={y.year: y.source for y in years},
        )


def load_calendar(extra_files: Sequence[Path] = (), *, shipped: bool = True) -> Calendar:
    """The shipped calendar files (``schemas/calendars``) and ``extra_files``; a later year wins."""
    paths = sorted(CALENDAR_DIR.glob("*.json")) if shipped else []
    by_year: dict[int, CalendarYear] = {}
    for path in [*paths, *extra_files]:
        year = CalendarYear.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))
        by_year[year.year] = year
    return Calendar.of(by_year.values())


# --- the clock ---------------------------------------------------------------


@dataclass(frozen=True)
class StageMark:
    """A reported stage change as the clock needs it (a row of ``stage_changes``)."""

    stage: Stage
    occurred_at: datetime
    reason: str | None = None


class Pause(BaseModel):
    started_at: datetime
    ended_at: datetime | None = Field(description="None while the case still waits")
    reason: str | None = Field(description="why the clock stopped (the 补正 reason)")


class Clock(BaseModel):
    """Where one limit stands (the whole case, or one stage)."""

    state: DeadlineState | None = Field(description="None for a stage not yet started")
    limit_days: int | None = Field(description="None: the stage counts only against the total")
    day_kind: DayKind
    started_at: datetime | None
    ended_at: datetime | None = None
    due_at: datetime | None = Field(
        description="when the limit runs out (while paused: if the clock resumed now)"
    )
    elapsed_days: float = Field(description="counted days so far, pauses excluded")
    remaining_days: float | None = Field(description="negative when overdue")


class StageClock(Clock):
    procedure: str = Field(description="the procedure code, e.g. acceptance")


class Deadline(Clock):
    """``deadline`` on the application resource."""

    customer_class: CustomerClass
    rule_from: date = Field(description="the date the applied rule of time is in force from")
    stopped_by: Stage | None = Field(None, description="completed or refused, once closed")
    pauses: list[Pause] = Field(default_factory=list)
    stages: list[StageClock] = Field(default_factory=list)


#: Stage reports that say the case has moved on to a procedure.
_ENTERS: dict[Stage, str] = {
    Stage.SURVEY_AND_PLAN: SURVEY_AND_PLAN,
    Stage.EXTERNAL_WORKS: EXTERNAL_WORKS,
    Stage.METERING_AND_CONNECTION: METERING_AND_CONNECTION,
}
_STOPS = (Stage.COMPLETED, Stage.REFUSED)

Interval = tuple[datetime, datetime]


def _counted(a: datetime, b: datetime, kind: DayKind, calendar: Calendar) -> float:
    """Seconds between ``a`` and ``b`` that count (whole-day slices in China Standard Time)."""
    if b <= a:
        return 0.0
    if kind is DayKind.CALENDAR:
        return (b - a).total_seconds()
    total, cursor = 0.0, a
    while cursor < b:
        day = cursor.astimezone(CHINA_STANDARD_TIME).date()
        next_midnight = datetime.combine(day + timedelta(days=1), time(), CHINA_STANDARD_TIME)
        end = min(b, next_midnight)
        if calendar.is_working_day(day):
            total += (end - cursor).total_seconds()
        cursor = end
    return total


def counted_days(a: datetime, b: datetime, kind: DayKind, calendar: Calendar) -> float:
    """Days between ``a`` and ``b`` that count for ``kind`` (fractions of days included)."""
    return _counted(a, b, kind, calendar) / DAY_S


def _advance(a: datetime, seconds: float, kind: DayKind, calendar: Calendar) -> datetime:
    """The moment ``seconds`` of counted time after ``a``."""
    if kind is DayKind.CALENDAR:
        return a + timedelta(seconds=seconds)
    # Day by day in China Standard Time (no daylight saving: every day is DAY_S long);
    # ``cursor`` is ``a`` on its own day, None on the days after (counted from midnight).
    day, left = a.astimezone(CHINA_STANDARD_TIME).date(), seconds
    cursor: datetime | None = a
    for _ in range(3700):  # ten years of days: a calendar with no working day ends here
        if calendar.is_working_day(day):
            room = DAY_S if cursor is None else (_midnight(day + _ONE_DAY) - cursor).total_seconds()
            if left <= room:
                return (cursor or _midnight(day)) + timedelta(seconds=left)
            left -= room
        day, cursor = day + _ONE_DAY, None
    raise ValueError("no working day within ten years of the calendar")


def _midnight(day: date) -> datetime:
    """The start of ``day`` in China Standard Time."""
    return datetime.combine(day, time(), CHINA_STANDARD_TIME)


def _active(start: datetime, end: datetime, pauses: list[Interval]) -> list[Interval]:
    """``[start, end)`` less the pauses."""
    spans, cursor = [], start
    for p_start, p_end in sorted(pauses):
        if p_end <= cursor or p_start >= end:
            continue
        if p_start > cursor:
            spans.append((cursor, p_start))
        cursor = max(cursor, p_end)
    if cursor < end:
        spans.append((cursor, end))
    return spans


def _due(
    start: datetime,
    until: datetime,
    limit_days: int,
    kind: DayKind,
    pauses: list[Interval],
    calendar: Calendar,
) -> datetime:
    """When ``limit_days`` of active time from ``start`` run out; after ``until`` all is active."""
    left = limit_days * DAY_S
    for a, b in _active(start, until, pauses):
        span = _counted(a, b, kind, calendar)
        if left <= span:
            return _advance(a, left, kind, calendar)
        left -= span
    return _advance(max(start, until), left, kind, calendar)


def _clock(
    *,
    start: datetime,
    end: datetime | None,
    now: datetime,
    limit_days: int | None,
    kind: DayKind,
    pauses: list[Interval],
    calendar: Calendar,
    warning_share: float,
) -> Clock:
    """One limit from ``start``; ``end`` None while it runs; ``pauses`` end no later than now."""
    until = end if end is not None else now
    elapsed_s = sum(_counted(a, b, kind, calendar) for a, b in _active(start, until, pauses))
    paused = end is None and any(a <= now <= b for a, b in pauses)  # open pauses end at now
    elapsed = elapsed_s / DAY_S
    due_at = None if limit_days is None else _due(start, until, limit_days, kind, pauses, calendar)
    remaining = None if limit_days is None else limit_days - elapsed
    if end is not None:
        state = DeadlineState.MET if remaining is None or remaining >= 0 else DeadlineState.OVERDUE
    elif paused:
        state = DeadlineState.PAUSED
    elif remaining is not None and remaining < 0:
        state = DeadlineState.OVERDUE
    elif limit_days is not None and elapsed >= warning_share * limit_days:
        state = DeadlineState.WARNING
    else:
        state = DeadlineState.ON_TRACK
    return Clock(
        state=state,
        limit_days=limit_days,
        day_kind=kind,
        started_at=start,
        ended_at=end,
        due_at=due_at,
        elapsed_days=elapsed,
        remaining_days=remaining,
    )


def deadline(
    *,
    voltage_level: str,
    procedures: Sequence[str],
    started_at: datetime,
    marks: Sequence[StageMark],
    calendar: Calendar,
    now: datetime,
    warning_share: float = 0.8,
) -> Deadline:
    """The deadline state of an application, from its stage reports (in the order reported)."""
    rule = rule_for(voltage_level, in_china_time(started_at, "started_at").date())
    kind = rule.day_kind
    steps = [str(p) for p in procedures] or [ACCEPTANCE]
    # Pauses: from a 补正 report to the next report that is not 补正 (or, open, to now).
    pause_records: list[Pause] = []
    stop: StageMark | None = None
    # ends[i]: when procedure i ended (the first report of a later procedure, or the stop).
    ends: dict[int, datetime] = {}
    for mark in marks:
        if stop is not None:
            break  # nothing counts after 办结 / 不予受理
        if mark.stage is Stage.SUPPLEMENT_REQUESTED:
            if not pause_records or pause_records[-1].ended_at is not None:
                pause_records.append(
                    Pause(started_at=mark.occurred_at, ended_at=None, reason=mark.reason)
                )
            continue
        if pause_records and pause_records[-1].ended_at is None:
            pause_records[-1] = pause_records[-1].model_copy(update={"ended_at": mark.occurred_at})
        if mark.stage in _STOPS:
            stop = mark
            entered = len(steps)
        elif mark.stage is Stage.ACCEPTED:
            entered = 1
        else:
            procedure = _ENTERS[mark.stage]
            entered = steps.index(procedure) if procedure in steps else 1
        for i in range(entered):
            ends.setdefault(i, mark.occurred_at)
    pauses: list[Interval] = [(p.started_at, p.ended_at or now) for p in pause_records]
    total = _clock(
        start=started_at,
        end=stop.occurred_at if stop else None,
        now=now,
        limit_days=rule.total_days,
        kind=kind,
        pauses=pauses,
        calendar=calendar,
        warning_share=warning_share,
    )
    stages: list[StageClock] = []
    previous_end: datetime | None = started_at
    for i, procedure in enumerate(steps):
        limit = rule.stages.get(procedure)
        closed_before = i > 0 and stop is not None and previous_end == stop.occurred_at
        if previous_end is None or closed_before:
            # Not reached: no earlier stage has ended, or the case was closed before it began.
            stages.append(
                StageClock(
                    procedure=procedure,
                    state=None,
                    limit_days=limit,
                    day_kind=kind,
                    started_at=None,
                    due_at=None,
                    elapsed_days=0.0,
                    remaining_days=None if limit is None else float(limit),
                )
            )
            previous_end = None
            continue
        clock = _clock(
            start=previous_end,
            end=ends.get(i),
            now=now,
            limit_days=limit,
            kind=kind,
            pauses=pauses,
            calendar=calendar,
            warning_share=warning_share,
        )
        stages.append(StageClock(procedure=procedure, **clock.model_dump()))
        previous_end = ends.get(i)
    return Deadline(
        **total.model_dump(),
        customer_class=rule.customer_class,
        rule_from=rule.applies_from,
        stopped_by=stop.stage if stop else None,
        pauses=pause_records,
        stages=stages,
    )


def thresholds_crossed(clock: Clock, shares: Sequence[float]) -> list[float]:
    """The shares of the limit (1.0 = overdue) a running clock has passed, lowest first."""
    if (
        clock.limit_days is None
        or clock.ended_at is not None
        or clock.state
        not in (
            DeadlineState.ON_TRACK,
            DeadlineState.WARNING,
            DeadlineState.OVERDUE,
        )
    ):
        return []
    used = clock.elapsed_days / clock.limit_days
    return sorted(s for s in shares if (used > s if s >= 1.0 else used >= s))
