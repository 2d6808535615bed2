"""The stage rules as pure functions: what may come next, and what is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from schemas.cases import (
    Stage,
    StageReport,
    check_stage_transition,
    current_stage,
    next_stages,
    stage_path,
)
from schemas.errors import InvalidInput, StageOutOfOrder

LOW = ["acceptance", "metering_and_connection"]
HIGH = ["acceptance", "survey_and_plan", "external_works", "metering_and_connection"]
NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
RECEIVED = NOW - timedelta(days=3)
S = Stage


def check(stage: Stage, history: list[Stage], procedures: list[str] = LOW, **extra: object) -> None:
    check_stage_transition(
        StageReport.model_validate({"stage": stage, "handler": "客户服务中心", **extra}),
        procedures=procedures,
        history=history,
        received_at=RECEIVED,
        now=NOW,
        clock_skew_s=300,
    )


def test_the_path_is_the_procedures_then_completion() -> None:
    assert stage_path(LOW) == [S.ACCEPTED, S.METERING_AND_CONNECTION, S.COMPLETED]
    assert stage_path(HIGH)[2] == S.EXTERNAL_WORKS


def test_a_supplement_pauses_the_stage_it_was_asked_in() -> None:
    history = [S.ACCEPTED, S.SUPPLEMENT_REQUESTED, S.SUPPLEMENT_REQUESTED]
    assert current_stage(history) is S.ACCEPTED
    assert next_stages(LOW, history)[0] is S.METERING_AND_CONNECTION
    check(S.SUPPLEMENT_REQUESTED, history, reason="再补一份材料")


@pytest.mark.parametrize(
    ("stage", "history", "current"),
    [
        (S.METERING_AND_CONNECTION, [], None),
        (S.COMPLETED, [S.ACCEPTED], S.ACCEPTED),
        (S.ACCEPTED, [S.ACCEPTED, S.METERING_AND_CONNECTION], S.METERING_AND_CONNECTION),
        (S.ACCEPTED, [S.ACCEPTED, S.METERING_AND_CONNECTION, S.COMPLETED], S.COMPLETED),
        (S.METERING_AND_CONNECTION, [S.ACCEPTED, S.REFUSED], S.REFUSED),
    ],
)
def test_out_of_order_names_the_current_stage(
    stage: Stage, history: list[Stage], current: Stage | None
) -> None:
    with pytest.raises(StageOutOfOrder) as refused:
        check(stage, history)
    assert refused.value.current_stage == (current.value if current else None)


def test_a_high_voltage_stage_is_not_skipped_forward() -> None:
    with pytest.raises(StageOutOfOrder) as refused:
        check(S.EXTERNAL_WORKS, [S.ACCEPTED], HIGH)
    assert refused.value.expected[0] == "survey_and_plan"
    check(S.SURVEY_AND_PLAN, [S.ACCEPTED], HIGH)


@pytest.mark.parametrize(
    ("stage", "extra", "field"),
    [
        (S.EXTERNAL_WORKS, {}, "stage"),
        (S.SUPPLEMENT_REQUESTED, {}, "reason"),
        (S.REFUSED, {"reason": "   "}, "reason"),  # blank (an empty one fails the model)
        (S.METERING_AND_CONNECTION, {"occurred_at": NOW + timedelta(minutes=10)}, "occurred_at"),
        (S.METERING_AND_CONNECTION, {"occurred_at": RECEIVED - timedelta(hours=1)}, "occurred_at"),
    ],
)
def test_bad_fields_are_invalid_input(stage: Stage, extra: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check(stage, [S.ACCEPTED], **extra)
    assert refused.value.field == field


def test_a_small_clock_skew_is_allowed() -> None:
    check(S.METERING_AND_CONNECTION, [S.ACCEPTED], occurred_at=NOW + timedelta(minutes=4))
