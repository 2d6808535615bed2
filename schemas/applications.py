"""一证办电 applications: the request (public contract), its tables, and the resource.

``CAPACITY_KVA`` (which capacity a voltage level admits) is checked when a
request is read; the other rules (evidence, procedures, limits, cross-checks)
are plain functions in ``schemas/dossier.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from schemas.credentials import CredentialParts, CredentialType, normalise_credential
from schemas.deadlines import Deadline, DeadlineState
from schemas.evidence import PROJECT_CODE as PROJECT_CODE  # re-exported for the API
from schemas.evidence import PROJECT_CODE_PATTERN as PROJECT_CODE_PATTERN
from schemas.text import IsoDateTime, text

#: 上海市 district codes (区划代码) and names.
SHANGHAI_DISTRICTS: dict[str, str] = {
    "310101": "黄浦区",
    "310104": "徐汇区",
    "310105": "长宁区",
    "310106": "静安区",
    "310107": "普陀区",
    "310109": "虹口区",
    "310110": "杨浦区",
    "310112": "闵行区",
    "310113": "宝山区",
    "310114": "嘉定区",
    "310115": "浦东新区",
    "310116": "金山区",
    "310117": "松江区",
    "310118": "青浦区",
    "310120": "奉贤区",
    "310151": "崇明区",
}

VoltageLevel = Literal["0.4kV", "10kV", "35kV", "110kV", "220kV"]
VOLTAGE_LEVELS: tuple[str, ...] = get_args(VoltageLevel)


def field_path(loc: Sequence[object]) -> str:
    """A validation error's location as the dotted field name clients know: the tag of the
    tagged union (``request.<voltage level>.capacity_kva``) is not a field."""
    return ".".join(str(p) for p in loc if p not in VOLTAGE_LEVELS)


DistrictCode = Literal[
    "310101", "310104", "310105", "310106", "310107", "310109", "310110", "310112",
    "310113", "310114", "310115", "310116", "310117", "310118", "310120", "310151",
]  # fmt: skip
BusinessType = Literal["new_connection", "capacity_increase"]

#: Capacity (kVA) each voltage level admits, inclusive. Low voltage serves up to
#: 160 kVA (small and micro enterprises at 160 kW and below connect at 0.4 kV);
#: the high-voltage bands overlap, as planning practice allows.
CAPACITY_KVA: dict[str, tuple[float, float]] = {
    "0.4kV": (1, 160),
    "10kV": (50, 10_000),
    "35kV": (5_000, 40_000),
    "110kV": (20_000, 100_000),
    "220kV": (100_000, 500_000),
}
HIGH_VOLTAGE_FOR_PROJECT = ("35kV", "110kV", "220kV")

#: 18 letters and digits: the shape of both credentials (check characters checked apart).
CREDENTIAL_PATTERN = r"^[0-9A-Za-z]{18}$"


class Procedure(StrEnum):
    """The utility's connection procedures (办电环节)."""

    ACCEPTANCE = "acceptance"  # 申请受理
    SURVEY_AND_PLAN = "survey_and_plan"  # 现场勘查及供电方案答复
    EXTERNAL_WORKS = "external_works"  # 外部工程实施
    METERING_AND_CONNECTION = "metering_and_connection"  # 装表接电


PROCEDURE_NAMES: dict[Procedure, str] = {
    Procedure.ACCEPTANCE: "申请受理",
    Procedure.SURVEY_AND_PLAN: "现场勘查及供电方案答复",
    Procedure.EXTERNAL_WORKS: "外部工程实施",
    Procedure.METERING_AND_CONNECTION: "装表接电",
}


class EvidenceKind(StrEnum):
    LICENCE = "licence"  # 营业执照 (电子证照库)
    PROJECT = "project"  # 项目批文 (投资项目在线审批监管平台)


class Applicant(BaseModel):
    credential_type: CredentialType = Field(description="uscc or resident_id")
    credential_no: str = Field(
        pattern=CREDENTIAL_PATTERN,
        description="统一社会信用代码 or 居民身份证号 (18 characters, check character valid)",
    )

    @field_validator("credential_no")
    @classmethod
    def _valid_credential(cls, value: str, info: ValidationInfo) -> str:
        kind = info.data.get("credential_type")
        if kind is None:
            return value
        return normalise_credential(kind, value)


class Site(BaseModel):
    address: str = text(200, min_length=2, description="用电地址")
    district_code: DistrictCode = Field(description="Shanghai district code 3101xx")


def _capacity(level: str) -> Any:
    low, high = CAPACITY_KVA[level]
    return Field(
        strict=True, ge=low, le=high, description=f"requested capacity in kVA ({low:g}–{high:g})"
    )


class _Connection(BaseModel):
    business_type: BusinessType


class LowVoltage(_Connection):
    voltage_level: Literal["0.4kV"]
    capacity_kva: float = _capacity("0.4kV")


class TenKilovolt(_Connection):
    voltage_level: Literal["10kV"]
    capacity_kva: float = _capacity("10kV")


class ThirtyFiveKilovolt(_Connection):
    voltage_level: Literal["35kV"]
    capacity_kva: float = _capacity("35kV")


class HundredTenKilovolt(_Connection):
    voltage_level: Literal["110kV"]
    capacity_kva: float = _capacity("110kV")


class TwoHundredTwentyKilovolt(_Connection):
    voltage_level: Literal["220kV"]
    capacity_kva: float = _capacity("220kV")


#: The request; the capacity band depends on the voltage level (a union tagged by it).
ConnectionRequest = Annotated[
    LowVoltage | TenKilovolt | ThirtyFiveKilovolt | HundredTenKilovolt | TwoHundredTwentyKilovolt,
    Field(discriminator="voltage_level"),
]


class ApplicationRequest(BaseModel):
    """``POST /api/v1/applications``: one credential, the site and the request."""

    model_config = ConfigDict(extra="forbid")

    applicant: Applicant
    site: Site
    request: ConnectionRequest
    project_code: str | None = Field(
        None, pattern=PROJECT_CODE_PATTERN, description="投资项目代码 YYYY-DDDDDD-II-TT-NNNNNN"
    )
    received_at: IsoDateTime | None = Field(
        None,
        description=(
            "when the customer applied, with a time zone (default: when this request arrives); "
            "the customer's clock starts here"
        ),
    )

    @field_validator("received_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("needs a time zone, e.g. +08:00")
        return value


class ApplicationStatus(StrEnum):
    EVIDENCE_PENDING = "evidence_pending"
    READY = "ready"
    REJECTED = "rejected"


class EvidenceStatus(StrEnum):
    PENDING = "pending"
    FETCHED = "fetched"
    NOT_FOUND = "not_found"


class Reason(BaseModel):
    """Why a dossier was rejected: a code for systems and a message for the clerk."""

    code: str
    message: str
    evidence: EvidenceKind | None = None


class EvidenceRecord(BaseModel):
    """A piece of evidence with where it came from and until when it holds."""

    kind: EvidenceKind
    subject: str = Field(description="the uscc or project code it is about")
    status: EvidenceStatus
    source_platform: str
    issuing_authority: str | None = None
    document_no: str | None = None
    issued_on: str | None = None
    valid_from: str | None = None
    valid_to: str | None = None
    fetched_at: datetime | None = None
    fields: dict[str, Any] = Field(default_factory=dict, description="canonical fields")


class ProcedureStep(BaseModel):
    code: Procedure
    name: str


class ApplicationResource(BaseModel):
    """``GET /api/v1/applications/{id}``."""

    id: str
    status: ApplicationStatus
    applicant: Applicant
    applicant_parts: CredentialParts
    site: Site
    request: ConnectionRequest
    project_code: str | None
    procedures: list[ProcedureStep]
    time_limit_days: int
    reasons: list[Reason]
    evidence: list[EvidenceRecord]
    created_at: datetime
    updated_at: datetime
    received_at: datetime | None = Field(None, description="when the customer applied")
    case_no: str | None = Field(None, description="办件编号, when it came from 一网通办")
    deadline: Deadline | None = Field(None, description="the customer's clock, computed now")
    jobs: list[DeliveryRecord] = Field(
        default_factory=list,
        description=(
            "asynchronous work on this application that has not gone through: each event a "
            "worker keeps retrying (with its attempts) or has dead-lettered (with the reason)"
        ),
    )


class ApplicationPage(BaseModel):
    """``GET /api/v1/applications``: one page, oldest first; ``next_cursor`` None on the last."""

    items: list[ApplicationResource]
    next_cursor: str | None


class ApplicationFilter(BaseModel):
    """The filters of ``GET /api/v1/applications`` (all optional, combined with AND)."""

    case_no: str | None = None
    status: ApplicationStatus | None = None
    deadline_state: DeadlineState | None = Field(
        None, description="as of the last evaluation (the deadline job runs every minute)"
    )
    credential_no: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


class DeliveryRecord(BaseModel):
    """How an event fared with one delivering worker (marketing system, 一网通办 status)."""

    worker: str
    event_id: str | None = None
    event_type: str | None = None
    status: str = Field(description="delivered, retrying or dead (in the dead-letter topic)")
    attempts: int
    last_error: str | None
    updated_at: datetime


class TimelineItem(BaseModel):
    """One event in the story of an application, with its deliveries."""

    event_id: str
    type: str
    time: datetime
    data: dict[str, Any]
    deliveries: list[DeliveryRecord]
