"""一网通办 cases (办件) and their status (办件状态), in the connector's own words."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.errors import InvalidInput
from schemas.text import IsoDateTime, optional_text, text


class Stage(StrEnum):
    """Stages the marketing system reports and 一网通办 shows the customer."""

    ACCEPTED = "accepted"  # 申请受理
    SURVEY_AND_PLAN = "survey_and_plan"  # 现场勘查及供电方案答复
    EXTERNAL_WORKS = "external_works"  # 外部工程实施
    METERING_AND_CONNECTION = "metering_and_connection"  # 装表接电
    COMPLETED = "completed"  # 办结
    SUPPLEMENT_REQUESTED = "supplement_requested"  # 补正
    REFUSED = "refused"  # 不予受理


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
    if report.stage in (Stage.SUPPLEMENT_REQUESTED, Stage.REFUSED) and not report.reason:
        raise InvalidInput("reason", f"required for stage {report.stage.value}")
    if report.occurred_at is not None and report.occurred_at.tzinfo is None:
        raise InvalidInput("occurred_at", "needs a time zone, e.g. +08:00")


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
