"""The rules of time, the calendar and the customer's clock (pure code, own calendar)."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from gateway.reports import median, p90
from schemas.applications import Procedure
from schemas.cases import Stage
from schemas.chinatime import CHINA_STANDARD_TIME
from schemas.deadlines import (
    Calendar,
    CalendarYear,
    DayKind,
    Deadline,
    DeadlineState,
    StageMark,
    counted_days,
    deadline,
    load_calendar,
    rule_for,
    thresholds_crossed,
)

# The test's own calendar, in January 2030 (Monday 7th): Wednesday 9th is a holiday,
# Saturday 12th a working day (调休).
HOLIDAY = date(2030, 1, 9)
WORKING_SATURDAY = date(2030, 1, 12)
CALENDAR = Calendar.of(
    [
        CalendarYear(
            year=2030,
            source="test calendar",
            holidays=[HOLIDAY],
            working_weekends=[WORKING_SATURDAY],
        )
    ]
)
LOW = [Procedure.ACCEPTANCE, Procedure.METERING_AND_CONNECTION]


def cst(day: int, hour: int = 9, month: int = 1, year: int = 2030) -> datetime:
    return datetime(year, month, day, hour, tzinfo=CHINA_STANDARD_TIME)


def low_voltage(start: datetime, now: datetime, *marks: StageMark) -> Deadline:
    return deadline(
        voltage_level="0.4kV",
        procedures=LOW,
        started_at=start,
        marks=marks,
        calendar=CALENDAR,
        now=now,
    )


@pytest.mark.parametrize(
    ("start", "end", "kind", "days"),
    [
        # Monday 09:00 → Monday 09:00: Mon 15 h, Tue 24, Wed holiday 0, Thu 24, Fri 24,
        # Sat (调休) 24, Sun 0, Mon 9 → 120 h.
        (cst(7), cst(14), DayKind.WORKING, 5.0),
        (cst(7), cst(14), DayKind.CALENDAR, 7.0),
        # Friday 18:00 → Monday 06:00 of the next week: Fri 6 h, Sat 19th and Sun 20th not
        # counted (an ordinary weekend), Mon 6 h.
        (cst(18, 18), cst(21, 6), DayKind.WORKING, 0.5),
        (cst(9, 0), cst(10, 0), DayKind.WORKING, 0.0),  # the holiday
        (cst(12, 0), cst(13, 0), DayKind.WORKING, 1.0),  # the working Saturday
        (cst(13, 0), cst(14, 0), DayKind.WORKING, 0.0),  # an ordinary Sunday
    ],
)
def test_counted_days_skip_weekends_and_holidays_and_count_the_working_saturday(
    start: datetime, end: datetime, kind: DayKind, days: float
) -> None:
    assert counted_days(start, end, kind, CALENDAR) == pytest.approx(days)


@pytest.mark.parametrize(
    ("voltage_level", "on", "total", "stages"),
    [
        ("0.4kV", date(2019, 6, 1), 15, {Procedure.EXTERNAL_WORKS: 5}),
        ("0.4kV", date(2020, 1, 1), 10, {Procedure.EXTERNAL_WORKS: 5}),
        ("0.4kV", date(2025, 3, 1), 10, {Procedure.ACCEPTANCE: 1, Procedure.EXTERNAL_WORKS: 5}),
        ("10kV", date(2019, 12, 31), 70, {Procedure.EXTERNAL_WORKS: 30}),
        ("10kV", date(2026, 11, 1), 60, {Procedure.EXTERNAL_WORKS: 30}),
        ("35kV", date(2019, 3, 1), 160, {}),
        ("220kV", date(2021, 3, 1), 150, {}),
        ("10kV", date(2018, 3, 1), 70, {Procedure.EXTERNAL_WORKS: 30}),  # before 2019: oldest
    ],
)
def test_rules_of_time_by_class_and_year(
    voltage_level: str, on: date, total: int, stages: dict[Procedure, int]
) -> None:
    rule = rule_for(voltage_level, on)
    assert (rule.total_days, rule.stages, rule.day_kind) == (total, stages, DayKind.WORKING)


def test_a_case_on_track_has_its_due_date_counted_in_working_days() -> None:
    clock = low_voltage(cst(7), cst(14))
    assert clock.state is DeadlineState.ON_TRACK
    assert (clock.limit_days, clock.elapsed_days, clock.remaining_days) == (10, 5.0, 5.0)
    # 240 working hours from Monday 7th 09:00: 15+24+24+24+24 (Sat 12th) then Mon 14th–Fri 18th
    # 24 each = 231, Sat 19th and Sun 20th skipped, Monday 21st 9 h.
    assert clock.due_at == cst(21)
    acceptance, metering = clock.stages
    assert acceptance.procedure == Procedure.ACCEPTANCE
    assert acceptance.limit_days == 1 and acceptance.state is DeadlineState.OVERDUE
    assert acceptance.due_at == cst(8)
    assert metering.state is None and metering.started_at is None


@pytest.mark.parametrize(
    ("now", "state"),
    [
        (cst(8), DeadlineState.ON_TRACK),  # 1 day of 10
        (cst(17), DeadlineState.WARNING),  # 8 days: 15+24+24+24+24+24+24+24+9 h = 8.0
        (cst(21, 10), DeadlineState.OVERDUE),  # an hour past the due time
    ],
)
def test_warning_at_eighty_per_cent_and_overdue_after_the_due_time(
    now: datetime, state: DeadlineState
) -> None:
    assert low_voltage(cst(7), now).state is state


def test_a_case_filed_forty_days_ago_is_overdue_and_one_filed_yesterday_on_track() -> None:
    now = cst(20, 9, month=3)
    calendar_days = timedelta(days=40)
    old = low_voltage(now - calendar_days, now)
    assert old.state is DeadlineState.OVERDUE and old.remaining_days is not None
    assert old.remaining_days < 0 and old.due_at is not None and old.due_at < now
    fresh = low_voltage(now - timedelta(days=1), now)
    assert fresh.state is DeadlineState.ON_TRACK and fresh.due_at is not None and fresh.due_at > now


def test_accepted_connected_and_completed_within_the_limit_is_met() -> None:
    clock = low_voltage(
        cst(7),
        cst(28),
        StageMark(Stage.ACCEPTED, cst(7, 15)),
        StageMark(Stage.METERING_AND_CONNECTION, cst(10)),
        StageMark(Stage.COMPLETED, cst(11)),
        StageMark(Stage.METERING_AND_CONNECTION, cst(14)),  # after 办结: not counted
    )
    assert clock.state is DeadlineState.MET and clock.stopped_by is Stage.COMPLETED
    # Mon 15 h, Tue 24, Wed holiday, Thu 24, Fri 9 → 72 h.
    assert clock.elapsed_days == 3.0 and clock.ended_at == cst(11)
    acceptance, metering = clock.stages
    assert (acceptance.state, acceptance.elapsed_days) == (DeadlineState.MET, 0.25)
    assert (metering.started_at, metering.ended_at) == (cst(7, 15), cst(11))
    assert metering.state is DeadlineState.MET and metering.limit_days is None


def test_supplement_pauses_the_clock_until_the_customer_answers() -> None:
    marks = (
        StageMark(Stage.ACCEPTED, cst(7, 12)),
        StageMark(Stage.SUPPLEMENT_REQUESTED, cst(8), "缺少产权证明"),
        StageMark(Stage.SUPPLEMENT_REQUESTED, cst(8, 15), "产权证明不清晰"),  # still waiting
        StageMark(Stage.METERING_AND_CONNECTION, cst(10)),
    )
    waiting = low_voltage(cst(7), cst(9, 12), *marks[:3])
    assert waiting.state is DeadlineState.PAUSED
    assert waiting.elapsed_days == 1.0  # Mon 15 h + Tue 9 h; nothing since Tuesday 09:00
    assert [(p.started_at, p.ended_at, p.reason) for p in waiting.pauses] == [
        (cst(8), None, "缺少产权证明")
    ]
    # Resumed now (Wednesday 12:00, the holiday): 9 more days from Thursday 00:00.
    assert waiting.due_at == cst(22, 0)

    answered = low_voltage(cst(7), cst(11), *marks)
    # Mon 15 h + Tue 9 h, paused Tue 09:00 → Thu 09:00, Thu 15 h + Fri 9 h = 48 h.
    assert answered.state is DeadlineState.ON_TRACK and answered.elapsed_days == 2.0
    assert answered.pauses[0].ended_at == cst(10)
    metering = answered.stages[1]
    assert metering.started_at == cst(7, 12) and metering.elapsed_days == 1.875
    # Without the pause the same case would have used 3 days (Wed is the holiday anyway).
    assert low_voltage(cst(7), cst(11), marks[0], marks[3]).elapsed_days == 3.0


def test_stages_of_a_high_voltage_case_end_with_the_next_stage_reported() -> None:
    clock = deadline(
        voltage_level="10kV",
        procedures=[
            Procedure.ACCEPTANCE,
            Procedure.SURVEY_AND_PLAN,
            Procedure.EXTERNAL_WORKS,
            Procedure.METERING_AND_CONNECTION,
        ],
        started_at=cst(7),
        marks=[
            StageMark(Stage.ACCEPTED, cst(7, 21)),
            StageMark(Stage.SURVEY_AND_PLAN, cst(8)),
            StageMark(Stage.EXTERNAL_WORKS, cst(10)),
        ],
        calendar=CALENDAR,
        now=cst(14),
    )
    acceptance, survey, works, metering = clock.stages
    assert (acceptance.started_at, acceptance.ended_at) == (cst(7), cst(7, 21))
    assert (survey.started_at, survey.ended_at) == (cst(7, 21), cst(10))
    assert survey.elapsed_days == 1.5  # Mon 3 h, Tue 24, Wed holiday, Thu 9
    assert works.started_at == cst(10) and works.ended_at is None and works.limit_days == 30
    assert works.elapsed_days == 3.0 and works.state is DeadlineState.ON_TRACK
    assert metering.state is None
    assert (clock.limit_days, clock.state) == (60, DeadlineState.ON_TRACK)


def test_thresholds_are_crossed_once_each_and_overdue_only_past_the_limit() -> None:
    shares = [0.5, 0.8, 1.0]
    assert thresholds_crossed(low_voltage(cst(7), cst(8)), shares) == []
    assert thresholds_crossed(low_voltage(cst(7), cst(14)), shares) == [0.5]
    assert thresholds_crossed(low_voltage(cst(7), cst(21, 9)), shares) == [0.5, 0.8]
    assert thresholds_crossed(low_voltage(cst(7), cst(21, 10)), shares) == [0.5, 0.8, 1.0]
    met = low_voltage(cst(7), cst(28), StageMark(Stage.COMPLETED, cst(8)))
    assert thresholds_crossed(met, shares) == []


def test_the_shipped_calendar_follows_the_state_council_notices(tmp_path: Path) -> None:
    shipped = load_calendar()
    assert {2024, 2025, 2026} <= shipped.years
    assert all("国务院办公厅" in shipped.sources[y] for y in (2024, 2025, 2026))
    assert not shipped.is_working_day(date(2025, 10, 8))  # 国庆节、中秋节 1–8 Oct 2025
    assert shipped.is_working_day(date(2025, 1, 26))  # a Sunday worked (春节调休)
    assert shipped.is_working_day(date(2026, 2, 28))  # a Saturday worked
    assert not shipped.is_working_day(date(2026, 2, 23))  # 正月初七, a Monday off
    assert not shipped.covers(date(2031, 1, 1))

    extra = tmp_path / "cn-2031.json"
    extra.write_text(
        json.dumps(
            {
                "year": 2031,
                "source": "ops",
                "holidays": ["2031-01-01"],
                "working_weekends": ["2031-01-04"],
            }
        )
    )
    added = load_calendar([extra])
    assert added.covers(date(2031, 1, 1)) and added.is_working_day(date(2031, 1, 4))
    assert not added.is_working_day(date(2031, 1, 1))


def test_a_calendar_file_with_a_weekday_as_working_weekend_is_refused() -> None:
    with pytest.raises(ValueError, match="is a weekday"):
        Calendar.of(
            [CalendarYear(year=2030, source="x", holidays=[], working_weekends=[date(2030, 1, 7)])]
        )


@pytest.mark.parametrize(
    ("values", "median_", "p90_"),
    [
        ([], None, None),
        ([4.0], 4.0, 4.0),
        ([3.0, 1.0], 2.0, 3.0),  # ⌈0.9·2⌉ = 2nd smallest
        ([float(v) for v in range(1, 11)], 5.5, 9.0),  # ⌈0.9·10⌉ = 9th
        ([float(v) for v in range(1, 12)], 6.0, 10.0),  # ⌈0.9·11⌉ = 10th
    ],
)
def test_report_median_and_nearest_rank_p90(
    values: list[float], median_: float | None, p90_: float | None
) -> None:
    assert (median(values), p90(values)) == (median_, p90_)
