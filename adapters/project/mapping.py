"""The platform's names and code tables ↔ the canonical ``ProjectApproval``.

The only module that knows the platform's pinyin field names and codes; the
interface itself is described in ``openapi.yaml`` beside this file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from adapters import envelope
from schemas.errors import FieldError
from schemas.evidence import ApprovalType, ProjectApproval, ProjectStatus
from schemas.seed import SeedLicence, SeedProject

# Envelope codes (返回码) of this platform besides ``adapters.envelope``'s.
NOT_FOUND = "4004"  # 项目不存在

OK_MESSAGE = "成功"

HTTP_STATUS: dict[str, int] = {**envelope.HTTP_STATUS, NOT_FOUND: 404}
"""The HTTP status the platform sends with each envelope code."""

# SPLX 审批类型
APPROVAL_TYPES: dict[str, ApprovalType] = {
    "01": ApprovalType.APPROVAL,  # 审批
    "02": ApprovalType.AUTHORISATION,  # 核准
    "03": ApprovalType.FILING,  # 备案
}
# XMZT 项目状态
PROJECT_STATUSES: dict[str, ProjectStatus] = {
    "1": ProjectStatus.VALID,  # 有效
    "2": ProjectStatus.REVOKED,  # 撤销
}

# The seed file's words for the same codes.
SEED_APPROVAL_TYPES: dict[str, str] = {"审批": "01", "核准": "02", "备案": "03"}
SEED_STATUSES: dict[str, str] = {"valid": "1", "revoked": "2"}
SEED_DEFAULT_AUTHORITY = "上海市发展和改革委员会"
"""审批部门 served for a seed project that names none."""


def project_from_data(data: Mapping[str, Any]) -> ProjectApproval:
    """The ``data`` of a GetProject answer as a ``ProjectApproval``.

    Raises ``ValueError`` naming the field when the data cannot be read.
    """

    def field(name: str) -> str:
        value = data.get(name)
        if not isinstance(value, str) or not value:
            raise FieldError(name, "missing or not a string")
        return value

    approval_type = APPROVAL_TYPES.get(field("SPLX"))
    if approval_type is None:
        raise FieldError("SPLX", f"unknown code {data['SPLX']!r}")
    status = PROJECT_STATUSES.get(field("XMZT"))
    if status is None:
        raise FieldError("XMZT", f"unknown code {data['XMZT']!r}")
    try:
        approved_on = date.fromisoformat(field("PFRQ"))
    except ValueError:
        raise FieldError("PFRQ", f"not a yyyy-MM-dd date: {data['PFRQ']!r}") from None
    owner_name = data.get("XMDWMC")
    return ProjectApproval(
        project_code=field("XMDM"),
        name=field("XMMC"),
        owner_uscc=field("XMDWTYSHXYDM"),
        owner_name=owner_name if isinstance(owner_name, str) and owner_name else None,
        approval_type=approval_type,
        document_no=field("PFWH"),
        issuing_authority=field("SPBM"),
        approved_on=approved_on,
        status=status,
    )


def data_from_seed(project: SeedProject, licences: Sequence[SeedLicence] = ()) -> dict[str, str]:
    """What the platform answers for a seed project (simulator side).

    The owner's name (XMDWMC) is the seed project's ``owner_name`` when given
    (a name the platform holds that may differ from the licence's), else the
    name on the seed licence of the owner's 统一社会信用代码; without either the
    field is left out.
    """
    data = {
        "XMDM": project.project_code,
        "XMMC": project.name,
        "XMDWTYSHXYDM": project.owner_uscc,
        "SPLX": SEED_APPROVAL_TYPES[project.approval_type],
        "PFWH": project.document_no,
        "SPBM": project.issuing_authority or SEED_DEFAULT_AUTHORITY,
        "PFRQ": project.approved_on.isoformat(),
        "XMZT": SEED_STATUSES[project.status],
    }
    owner = next((lic for lic in licences if lic.uscc == project.owner_uscc), None)
    owner_name = project.owner_name or (owner.name if owner is not None else None)
    if owner_name is not None:
        data["XMDWMC"] = owner_name
    return data
