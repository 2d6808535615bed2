"""占掘路: road occupation and excavation permits, in the connector's own words."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.text import IsoDate, optional_text, text

#: 统一社会信用代码 (shape; its check character is the platform's to check).
USCC_PATTERN = r"^[0-9A-HJ-NPQRTUWXY]{2}\d{6}[0-9A-HJ-NPQRTUWXY]{10}$"


class PermitRequest(BaseModel):
    """What the connector files with the road authority for an application's external works."""

    model_config = ConfigDict(frozen=True)

    application_id: str = Field(description="the 一证办电 application the works serve")
    works_name: str = Field(min_length=1, max_length=200, description="工程名称")
    builder_name: str = Field(min_length=1, max_length=200, description="建设单位 (the applicant)")
    builder_uscc: str = Field(description="建设单位统一社会信用代码")
    contractor_name: str = Field(min_length=1, max_length=200, description="施工单位")
    contractor_uscc: str | None = Field(None, description="施工单位统一社会信用代码")
    road: str = Field(min_length=1, max_length=200, description="道路名称")
    section_start: str = Field(min_length=1, max_length=200, description="起点")
    section_end: str = Field(min_length=1, max_length=200, description="止点")
    district_code: str = Field(pattern=r"^3101\d{2}$", description="区划代码")
    excavation_length_m: float = Field(gt=0, le=100_000, description="挖掘长度 (m)")
    excavation_area_m2: float = Field(gt=0, le=1_000_000, description="挖掘面积 (m²)")
    period_start: date = Field(description="施工期限自")
    period_end: date = Field(description="施工期限至")

    @model_validator(mode="after")
    def _period_in_order(self) -> PermitRequest:
        if self.period_end < self.period_start:
            raise ValueError("period_end is before period_start")
        return self


class PermitFiling(BaseModel):
    """The authority's acknowledgement of a filed permit application."""

    model_config = ConfigDict(frozen=True)

    filing_no: str = Field(description="受理编号: the authority's reference, echoed in decisions")
    filed_at: datetime


class PermitOutcome(StrEnum):
    APPROVED = "approved"  # 准予许可
    REFUSED = "refused"  # 不予许可


class PermitDecision(BaseModel):
    """The authority's decision, as it arrives later in a signed callback."""

    model_config = ConfigDict(frozen=True)

    filing_no: str = text(64)
    outcome: PermitOutcome
    permit_no: str | None = optional_text(100, description="许可证号, when approved")
    valid_from: date | None = None
    valid_to: date | None = None
    reason: str | None = optional_text(1000, description="不予许可理由, when refused")
    decided_at: datetime


class PermitWorks(BaseModel):
    """``POST /api/v1/applications/{id}/permits``: the external works to get a permit for.

    The builder (建设单位) is the applicant; its name comes from the licence evidence.
    """

    model_config = ConfigDict(extra="forbid")

    works_name: str = text(200, description="工程名称")
    contractor_name: str = text(200, description="施工单位")
    contractor_uscc: str | None = Field(
        None, pattern=USCC_PATTERN, description="施工单位统一社会信用代码"
    )
    road: str = text(200, description="道路名称")
    section_start: str = text(200, description="起点")
    section_end: str = text(200, description="止点")
    excavation_length_m: float = Field(strict=True, gt=0, le=100_000, description="挖掘长度 (m)")
    excavation_area_m2: float = Field(strict=True, gt=0, le=1_000_000, description="挖掘面积 (m²)")
    period_start: IsoDate = Field(description="施工期限自")
    period_end: IsoDate = Field(description="施工期限至")

    @model_validator(mode="after")
    def _period_in_order(self) -> PermitWorks:
        if self.period_end < self.period_start:
            raise ValueError("period_end is before period_start")
        return self


class PermitStatus(StrEnum):
    REQUESTED = "requested"  # recorded, not yet filed with the authority
    FILED = "filed"  # 已受理: waiting for the decision
    APPROVED = "approved"
    REFUSED = "refused"


class PermitResource(BaseModel):
    """``GET /api/v1/permits/{id}``."""

    id: str
    application_id: str
    status: PermitStatus
    request: PermitRequest
    filing_no: str | None
    filed_at: datetime | None
    permit_no: str | None
    valid_from: date | None
    valid_to: date | None
    reason: str | None
    decided_at: datetime | None
    created_at: datetime
    updated_at: datetime
