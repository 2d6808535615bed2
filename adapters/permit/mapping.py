"""The platform's names and code tables ↔ the canonical permit models.

The only module that knows the platform's pinyin field names, codes and
formats; the interface itself is described in ``openapi.yaml`` beside this file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from pydantic import ValidationError

from adapters import envelope
from schemas.chinatime import format_platform_time, parse_platform_time
from schemas.errors import FieldError
from schemas.permits import PermitDecision, PermitFiling, PermitOutcome, PermitRequest

# Envelope codes (返回码) of this platform besides ``adapters.envelope``'s.
DUPLICATE_REQUEST = "4090"  # 请求流水号重复但申请内容不一致

APPLICATIONS_PATH = "/api/v1/permit-applications"
"""Where applications are filed (operation FilePermit)."""

OK_MESSAGE = "受理成功"

HTTP_STATUS: dict[str, int] = {**envelope.HTTP_STATUS, DUPLICATE_REQUEST: 409}
"""The HTTP status the platform sends with each envelope code."""

# Application body (占掘路许可申请): canonical field → platform field.
FIELDS: dict[str, str] = {
    "application_id": "GLYWH",  # 关联业务号 (our 一证办电 application)
    "works_name": "GCMC",  # 工程名称
    "builder_name": "JSDW",  # 建设单位
    "builder_uscc": "JSDWDM",  # 建设单位统一社会信用代码
    "contractor_name": "SGDW",  # 施工单位
    "contractor_uscc": "SGDWDM",  # 施工单位统一社会信用代码 (optional)
    "road": "DLMC",  # 道路名称
    "section_start": "QD",  # 起点
    "section_end": "ZD",  # 止点
    "district_code": "XZQH",  # 区划代码
    "excavation_length_m": "WJCD",  # 挖掘长度 (m)
    "excavation_area_m2": "WJMJ",  # 挖掘面积 (m²)
    "period_start": "SGQXZ",  # 施工期限自 yyyy-MM-dd
    "period_end": "SGQXZH",  # 施工期限至 yyyy-MM-dd
}
REQUEST_ID = "QQLSH"
"""请求流水号: derived from the application's content, so a repeat is recognised as one."""
_CANONICAL = {platform: canonical for canonical, platform in FIELDS.items()}

# SPJG 审批结果
OUTCOMES: dict[str, PermitOutcome] = {
    "1": PermitOutcome.APPROVED,  # 准予许可
    "2": PermitOutcome.REFUSED,  # 不予许可
}
SPJG: dict[PermitOutcome, str] = {outcome: code for code, outcome in OUTCOMES.items()}


def body_from_request(request: PermitRequest) -> dict[str, Any]:
    """The FilePermit body for ``request``, with its content-derived request id."""
    values = request.model_dump(mode="json", exclude_none=True)
    body: dict[str, Any] = {FIELDS[name]: value for name, value in values.items()}
    canonical = json.dumps(body, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    body[REQUEST_ID] = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]
    return body


def request_from_body(body: Mapping[str, Any]) -> PermitRequest:
    """A FilePermit body as a ``PermitRequest`` (simulator side).

    Raises ``ValueError`` naming the platform field when the body cannot be read.
    """
    unknown = sorted(set(body) - set(_CANONICAL) - {REQUEST_ID})
    if unknown:
        raise FieldError(unknown[0], "unknown field")
    request_id(body)
    try:
        return PermitRequest.model_validate(
            {_CANONICAL[name]: value for name, value in body.items() if name in _CANONICAL}
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        field = FIELDS.get(str(error["loc"][0]), "body") if error["loc"] else "body"
        raise FieldError(field, f"{error['msg']}") from None


def request_id(body: Mapping[str, Any]) -> str:
    """The body's 请求流水号; ``ValueError`` if it is missing or malformed."""
    value = body.get(REQUEST_ID)
    if not isinstance(value, str) or not 1 <= len(value) <= 64:
        raise FieldError(REQUEST_ID, "missing or not a string of 1-64 characters")
    return value


def filing_from_data(data: Mapping[str, Any]) -> PermitFiling:
    """The ``data`` of a FilePermit answer as a ``PermitFiling``.

    Raises ``ValueError`` naming the field when the data cannot be read.
    """
    return PermitFiling(filing_no=_text(data, "SLBH"), filed_at=_time(data, "SLSJ"))


def data_from_filing(filing: PermitFiling) -> dict[str, str]:
    """What the platform answers for an accepted filing (simulator side)."""
    return {"SLBH": filing.filing_no, "SLSJ": format_platform_time(filing.filed_at, "filed_at")}


def decision_from_callback(body: Mapping[str, Any]) -> PermitDecision:
    """The body of a decision callback as a ``PermitDecision``.

    Raises ``ValueError`` naming the field when the body cannot be read.
    """
    _text(body, "GLYWH")  # required, though the decision is correlated by SLBH
    outcome = OUTCOMES.get(_text(body, "SPJG"))
    if outcome is None:
        raise FieldError("SPJG", f"unknown code {body['SPJG']!r}")
    filing_no, decided_at = _text(body, "SLBH"), _time(body, "SPSJ")
    if outcome is PermitOutcome.REFUSED:
        return PermitDecision(
            filing_no=filing_no,
            outcome=outcome,
            reason=_text(body, "BYXKLY"),
            decided_at=decided_at,
        )
    valid_from, valid_to = _date(body, "YXQZ"), _date(body, "YXQZH")
    if valid_to < valid_from:
        raise FieldError("YXQZH", "before YXQZ")
    return PermitDecision(
        filing_no=filing_no,
        outcome=outcome,
        permit_no=_text(body, "XKZH"),
        valid_from=valid_from,
        valid_to=valid_to,
        decided_at=decided_at,
    )


def callback_from_decision(decision: PermitDecision, application_id: str) -> dict[str, str]:
    """The callback body the platform posts for ``decision`` (simulator side)."""
    body = {
        "SLBH": decision.filing_no,
        "GLYWH": application_id,
        "SPJG": SPJG[decision.outcome],
        "SPSJ": format_platform_time(decision.decided_at, "decided_at"),
    }
    if decision.permit_no is not None:
        body["XKZH"] = decision.permit_no
    if decision.valid_from is not None:
        body["YXQZ"] = decision.valid_from.isoformat()
    if decision.valid_to is not None:
        body["YXQZH"] = decision.valid_to.isoformat()
    if decision.reason is not None:
        body["BYXKLY"] = decision.reason
    return body


def _text(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise FieldError(name, "missing or not a string")
    return value


def _time(data: Mapping[str, Any], name: str) -> datetime:
    return parse_platform_time(data.get(name), name)


def _date(data: Mapping[str, Any], name: str) -> date:
    text = _text(data, name)
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise FieldError(name, f"not a yyyy-MM-dd date: {text!r}") from None
