"""一网通办 cases (办件) and their status (办件状态), in the connector's own words.

The stage rules (``check_stage_transition`` and the functions it is built
from) are pure: they take what the store holds and raise, and never do I/O,
so the API and the deadline clock share them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.applications import Procedure
from schemas.errors import InvalidInput, StageOutOfOrder
from schemas.stages import Stage
from schemas.text import IsoDateTime, optional_text, text


class CaseStatusUpdate(BaseModel):
    """One stage change of a case, pushed to 一网通办; ``seq`` orders the pushes of a case."""

    model_config = ConfigDict(frozen=True)

    event_id: str = Field(description="unique per update: the platform may see it twice")
    case_no: str = Field(description="办件编号")
    application_id: str
    seq: int = Field(ge=1)
    stage: Stage
    handler: str = Field(description="办理人 / 办理部门")
    occurred_at: datetime
    reason: str | None = Field(None, description="补正 / 不予受理 reason")
    result_code: str | None = Field(None, description="办结结果代码")
    time_limit_days: int | None = Field(None, description="承诺时限: the promised limit, in days")
    day_kind: str | None = Field(None, description="calendar or working (days of the limit)")
    due_at: datetime | None = Field(None, description="承诺办结时间: when the limit runs out")


class InboundCase(BaseModel):
    """A case filed by a customer on the 一网通办 portal."""

    model_config = ConfigDict(frozen=True)

    case_no: str = text(64, description="办件编号 / 申办流水号: the idempotency key")
    item_code: str = text(64, description="事项编码")
    credential_type: str = text(16, description="uscc or resident_id")
    credential_no: str = text(32)
    applicant_name: str = text(200)
    district_code: str = text(6)
    site_address: str = text(200)
    business_type: str = text(32)
    voltage_level: str = text(16)
    capacity_kva: float = Field(strict=True, gt=0)
    project_code: str | None = optional_text(32)
    filed_at: datetime


class MarketingNotice(BaseModel):
    """What the connector tells the marketing system (营销系统): one notice per event."""

    model_config = ConfigDict(frozen=True)

    event_id: str = Field(description="unique; the marketing system deduplicates on it")
    kind: str = Field(description="e.g. permit_decision, case_received, stage_changed")
    application_id: str
    occurred_at: datetime
    payload: dict[str, Any] = Field(default_factory=dict)


class StageReport(BaseModel):
    """``POST /api/v1/applications/{id}/progress``: a stage change the marketing system reports."""

    model_config = ConfigDict(extra="forbid")

    stage: Stage
    handler: str = text(200, description="办理人 / 办理部门")
    occurred_at: IsoDateTime | None = Field(
        None, description="when it happened, with its offset; default now"
    )
    reason: str | None = optional_text(1000, description="required for 补正 / 不予受理")
    result_code: str | None = optional_text(32, description="办结结果代码")


def check_stage_report(report: StageReport) -> None:
    """Rules across fields; ``InvalidInput`` names the field to correct."""
    if report.stage in (Stage.SUPPLEMENT_REQUESTED, Stage.REFUSED) and not (
        report.reason and report.reason.strip()
    ):
        raise InvalidInput("reason", f"required for stage {report.stage.value}")
    if report.occurred_at is not None and report.occurred_at.tzinfo is None:
        raise InvalidInput("occurred_at", "needs a time zone, e.g. +08:00")


# --- the stage rules ------------------------------------------------------------

#: The stage that reports each procedure done or under way.
PROCEDURE_STAGES: dict[Procedure, Stage] = {
    Procedure.ACCEPTANCE: Stage.ACCEPTED,
    Procedure.SURVEY_AND_PLAN: Stage.SURVEY_AND_PLAN,
    Procedure.EXTERNAL_WORKS: Stage.EXTERNAL_WORKS,
    Procedure.METERING_AND_CONNECTION: Stage.METERING_AND_CONNECTION,
}
#: After these nothing more is reported: 办结 and 不予受理.
FINAL_STAGES = frozenset({Stage.COMPLETED, Stage.REFUSED})
#: Stages that may come at any point before a final one, and repeat (补正, 不予受理/退回).
ANY_TIME_STAGES = frozenset({Stage.SUPPLEMENT_REQUESTED, Stage.REFUSED})


def stage_path(procedures: Sequence[str]) -> list[Stage]:
    """The stages an application goes through, in order: one per procedure, then 办结."""
    return [PROCEDURE_STAGES[Procedure(p)] for p in procedures] + [Stage.COMPLETED]


def current_stage(history: Sequence[Stage]) -> Stage | None:
    """Where the application stands: the last stage reported other than 补正 (None: nothing yet).

    A 补正 pauses the stage it was asked in; it does not move the application on.
    """
    return next((s for s in reversed(history) if s is not Stage.SUPPLEMENT_REQUESTED), None)


def next_stages(procedures: Sequence[str], history: Sequence[Stage]) -> list[Stage]:
    """The stages that may be reported next (empty after 办结 or 不予受理).

    The procedures are the order, and none is skipped: every stage is pushed to
    the customer on 一网通办, and each counts as a procedure of its own, so the
    next procedure stage is exactly the one after the current; 办结 only after
    the last procedure. 补正 and 不予受理 may come at any point before the end.
    """
    current = current_stage(history)
    if current in FINAL_STAGES:
        return []
    path = stage_path(procedures)
    following = path[0] if current is None else path[path.index(current) + 1]
    return [following, Stage.SUPPLEMENT_REQUESTED, Stage.REFUSED]


def check_stage_transition(
    report: StageReport,
    *,
    procedures: Sequence[str],
    history: Sequence[Stage],
    received_at: datetime,
    now: datetime,
    clock_skew_s: float,
) -> None:
    """Refuse a report that breaks the procedures' rules; return None if it may be recorded.

    ``history``: the stages reported so far, in order; ``received_at``: when the
    application was received. Raises ``InvalidInput`` (422) for a bad field —
    a missing reason, a time in the future (beyond ``clock_skew_s``) or before
    the application, a stage that is not one of the application's procedures —
    and ``StageOutOfOrder`` (409) naming the current stage for a stage out of order.
    """
    check_stage_report(report)
    stage = report.stage
    if stage not in ANY_TIME_STAGES and stage not in stage_path(procedures):
        names = ", ".join(s.value for s in stage_path(procedures))
        raise InvalidInput("stage", f"{stage.value} is not a stage of this application ({names})")
    if report.occurred_at is not None:
        skew = timedelta(seconds=clock_skew_s)
        if report.occurred_at > now + skew:
            raise InvalidInput("occurred_at", f"in the future (now is {now.isoformat()})")
        if report.occurred_at < received_at - skew:
            raise InvalidInput(
                "occurred_at",
                f"before the application was received ({received_at.isoformat()})",
            )
    allowed = next_stages(procedures, history)
    if stage not in allowed:
        current = current_stage(history)
        named = current.value if current is not None else None
        if not allowed:
            detail = f"the application is {named}: nothing may follow"
        else:
            detail = (
                f"{stage.value} cannot follow {named or 'nothing'}; "
                f"next: {', '.join(s.value for s in allowed)}"
            )
        raise StageOutOfOrder(detail, current_stage=named, expected=[s.value for s in allowed])


class StageChangeResource(BaseModel):
    application_id: str
    seq: int
    stage: Stage
    handler: str
    occurred_at: datetime
    reason: str | None
    result_code: str | None
    event_id: str
    case_no: str | None = Field(
        None, description="办件编号, when the application came from 一网通办"
    )
    time_limit_days: int | None = Field(None, description="the promised limit, in days")
    day_kind: str | None = Field(None, description="calendar or working (days of the limit)")
    due_at: datetime | None = Field(
        None, description="when the limit runs out, as of this change (None once closed)"
    )
