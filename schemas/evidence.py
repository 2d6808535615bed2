"""Canonical evidence: what the government holds, in the connector's own words.

Each record carries its issuing authority, issue date and validity so that a
dossier can show where every fact came from and until when it holds.
"""

from __future__ import annotations

import re
from datetime import date
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class RegistrationStatus(StrEnum):
    """登记状态, canonical meaning."""

    ACTIVE = "active"  # 存续 / 在业
    REVOKED = "revoked"  # 吊销
    CANCELLED = "cancelled"  # 注销
    MOVED_OUT = "moved_out"  # 迁出


class BusinessLicence(BaseModel):
    """营业执照 as held in the electronic licence library (电子证照库)."""

    model_config = ConfigDict(frozen=True)

    uscc: str = Field(description="统一社会信用代码")
    name: str = Field(description="名称")
    legal_representative: str = Field(description="法定代表人")
    address: str = Field(description="住所")
    registration_status: RegistrationStatus = Field(description="登记状态")
    licence_no: str = Field(description="电子证照编号")
    issuing_authority: str = Field(description="登记机关 / 发证机关")
    issued_on: date = Field(description="发证日期")
    valid_from: date = Field(description="营业期限自")
    valid_to: date | None = Field(description="营业期限至; None = 长期")


#: 投资项目统一代码 YYYY-DDDDDD-II-TT-NNNNNN; TT 01 审批, 02 核准, 03 备案.
PROJECT_CODE_PATTERN = r"^(19|20)\d{2}-\d{6}-\d{2}-0[123]-\d{6}$"
PROJECT_CODE = re.compile(PROJECT_CODE_PATTERN)
"""投资项目统一代码 YYYY-DDDDDD-II-TT-NNNNNN (year, division, industry, type, serial);
TT 01 审批, 02 核准, 03 备案. The one pattern: the API, the adapter and the simulator
all check a code with it (``fullmatch``)."""


class ApprovalType(StrEnum):
    """Kind of investment project decision (the TT part of the project code)."""

    APPROVAL = "approval"  # 审批 (01)
    AUTHORISATION = "authorisation"  # 核准 (02)
    FILING = "filing"  # 备案 (03)


class ProjectStatus(StrEnum):
    VALID = "valid"
    REVOKED = "revoked"


class ProjectApproval(BaseModel):
    """项目批文: the approval, authorisation or filing of an investment project."""

    model_config = ConfigDict(frozen=True)

    project_code: str = Field(description="投资项目统一代码")
    name: str = Field(description="项目名称")
    owner_uscc: str = Field(description="项目单位统一社会信用代码")
    owner_name: str | None = Field(None, description="项目单位名称, where the platform gives it")
    approval_type: ApprovalType
    document_no: str = Field(description="批复文号, e.g. 沪发改能源〔2020〕77号")
    issuing_authority: str = Field(description="审批部门")
    approved_on: date
    status: ProjectStatus


#: 登记状态 words for messages a clerk reads.
REGISTRATION_STATUS_WORDS: dict[RegistrationStatus, str] = {
    RegistrationStatus.ACTIVE: "存续（在业）",
    RegistrationStatus.REVOKED: "吊销",
    RegistrationStatus.CANCELLED: "注销",
    RegistrationStatus.MOVED_OUT: "迁出",
}
