"""一网通办's field names and code tables ↔ the canonical case models.

The only module that knows the platform's upper-case pinyin field names and
its codes; the interface itself is described in ``openapi.yaml`` beside this
file. Two bodies cross the wire:

- the status push we send (办件状态推送, ``POST /api/v1/case-status``), from a
  ``CaseStatusUpdate`` (``status_body``), telling the customer the promised
  limit (CNSX, SXLX) and due time (CNBJSJ) where known;
- the case callback the platform sends us (办件推送), read into an
  ``InboundCase`` (``case_from_callback``; ``callback_body`` is the inverse,
  for the simulator).

Times on the wire are ``yyyy-MM-dd HH:mm:ss`` in China Standard Time (UTC+8).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from adapters import envelope
from schemas.applications import BusinessType, VoltageLevel
from schemas.cases import CaseStatusUpdate, InboundCase
from schemas.chinatime import format_platform_time, parse_platform_time
from schemas.credentials import CredentialType
from schemas.errors import FieldError
from schemas.stages import Stage

STATUS_PATH = "/api/v1/case-status"

# Envelope codes (返回码) of this platform besides ``adapters.envelope``'s.
UNKNOWN_CASE = "4004"  # 办件不存在
OUT_OF_ORDER = "4090"  # 序号不连续: XH is not the next after the case's last accepted XH
LAST_SEQ = "ZHXH"  # 最后序号: in the 4090 answer's data, the case's last accepted XH

OK_MESSAGE = "成功"
DUPLICATE_MESSAGE = "重复推送，已接收"  # a repeated SJID is success

HTTP_STATUS: dict[str, int] = {**envelope.HTTP_STATUS, UNKNOWN_CASE: 404, OUT_OF_ORDER: 409}
"""The HTTP status the platform sends with each envelope code."""

# ZTDM 状态代码 and HJMC 环节名称 (the latter only with 03 办理中).
ACCEPTED = "01"  # 受理
SUPPLEMENT = "02"  # 补正
IN_PROGRESS = "03"  # 办理中
COMPLETED = "04"  # 办结
REFUSED = "05"  # 不予受理

STAGE_CODES: dict[Stage, tuple[str, str | None]] = {
    Stage.ACCEPTED: (ACCEPTED, None),
    Stage.SUPPLEMENT_REQUESTED: (SUPPLEMENT, None),
    Stage.SURVEY_AND_PLAN: (IN_PROGRESS, "现场勘查及供电方案答复"),
    Stage.EXTERNAL_WORKS: (IN_PROGRESS, "外部工程实施"),
    Stage.METERING_AND_CONNECTION: (IN_PROGRESS, "装表接电"),
    Stage.COMPLETED: (COMPLETED, None),
    Stage.REFUSED: (REFUSED, None),
}
STAGES: dict[tuple[str, str | None], Stage] = {codes: stage for stage, codes in STAGE_CODES.items()}
REASON_REQUIRED = frozenset({SUPPLEMENT, REFUSED})
"""States whose push must say why (YY)."""

# BJJGDM 办结结果代码 (only with 04 办结).
RESULT_CODES: dict[str, str] = {"01": "办结（已送电）", "02": "办结（终止办理）"}
DEFAULT_RESULT_CODE = "01"
"""Sent when a completion carries no result code: 办结 means the customer is connected."""

# SXLX 时限类型 (with CNSX 承诺时限, days).
DAY_KINDS: dict[str, str] = {"calendar": "1", "working": "2"}  # 1 自然日, 2 工作日

# SQRZJLX 申请人证件类型.
CREDENTIAL_TYPES: dict[str, CredentialType] = {
    "001": CredentialType.USCC,  # 统一社会信用代码
    "111": CredentialType.RESIDENT_ID,  # 居民身份证
}
# YWLX 业务类型.
BUSINESS_TYPES: dict[str, BusinessType] = {
    "01": "new_connection",  # 新装
    "02": "capacity_increase",  # 增容
}
# DYDJ 电压等级.
VOLTAGE_LEVELS: dict[str, VoltageLevel] = {
    "01": "0.4kV",  # 交流 380/220V
    "02": "10kV",
    "03": "35kV",
    "04": "110kV",
    "05": "220kV",
}

DIVISION = re.compile(r"[0-9]{6}")


# --- status push (ours → platform) -------------------------------------------


def status_body(update: CaseStatusUpdate) -> dict[str, Any]:
    """The push body for one stage change.

    Raises ``ValueError`` naming the canonical field the platform would refuse.
    """
    state, step = STAGE_CODES[update.stage]
    body: dict[str, Any] = {
        "SJID": update.event_id,
        "BJBH": update.case_no,
        "XH": update.seq,
        "ZTDM": state,
        "BLR": update.handler,
        "BLSJ": format_platform_time(update.occurred_at, "occurred_at"),
    }
    if step is not None:
        body["HJMC"] = step
    if update.reason:
        body["YY"] = update.reason
    elif state in REASON_REQUIRED:
        raise FieldError("reason", f"required for stage {update.stage.value}")
    if update.time_limit_days is not None:
        body["CNSX"] = update.time_limit_days
        if update.day_kind in DAY_KINDS:
            body["SXLX"] = DAY_KINDS[update.day_kind]
    if update.due_at is not None:
        body["CNBJSJ"] = format_platform_time(update.due_at, "due_at")
    if state == COMPLETED:
        result = update.result_code or DEFAULT_RESULT_CODE
        if result not in RESULT_CODES:
            raise FieldError("result_code", f"unknown 办结结果代码 {result!r}")
        body["BJJGDM"] = result
    return body


def stage_from_codes(state: object, step: object) -> Stage:
    """The stage a ZTDM (and, for 办理中, HJMC) stands for; ``ValueError`` naming the field."""
    if state == IN_PROGRESS:
        stage = STAGES.get((state, step)) if isinstance(step, str) else None
        if stage is None:
            raise FieldError("HJMC", f"unknown 环节名称 {step!r} for ZTDM {state}")
        return stage
    if not isinstance(state, str) or (state, None) not in STAGES:
        raise FieldError("ZTDM", f"unknown 状态代码 {state!r}")
    return STAGES[(state, None)]


def last_seq_of(data: object) -> int:
    """The case's last accepted XH from a 4090 answer's ``data``; ``ValueError`` if absent."""
    last = data.get(LAST_SEQ) if isinstance(data, Mapping) else None
    if isinstance(last, bool) or not isinstance(last, int) or last < 0:
        raise ValueError(f"{LAST_SEQ}: not a sequence number: {last!r}")
    return last


# --- case callback (platform → ours) -----------------------------------------


def case_from_callback(body: object) -> InboundCase:
    """The case callback body as an ``InboundCase``.

    Raises ``ValueError`` naming the platform's field when the body cannot be read.
    """
    if not isinstance(body, Mapping):
        raise FieldError("body", "not a JSON object")

    def text(name: str) -> str:
        value = body.get(name)
        if not isinstance(value, str) or not value.strip():
            raise FieldError(name, "missing or not a string")
        return value.strip()

    def code(name: str, table: Mapping[str, str]) -> str:
        value = text(name)
        if value not in table:
            raise FieldError(name, f"unknown code {value!r}")
        return table[value]

    division = text("XZQH")
    if not DIVISION.fullmatch(division):
        raise FieldError("XZQH", f"not a 6-digit division code: {division!r}")
    capacity = body.get("RL")
    if isinstance(capacity, bool) or not isinstance(capacity, int | float) or capacity <= 0:
        raise FieldError("RL", f"not a positive number: {capacity!r}")
    project_code = body.get("XMDM")
    if project_code is not None and not isinstance(project_code, str):
        raise FieldError("XMDM", f"not a string: {project_code!r}")
    project_code = (project_code or "").strip() or None
    try:
        return InboundCase(
            case_no=text("BJBH"),
            item_code=text("SXBM"),
            credential_type=code("SQRZJLX", CREDENTIAL_TYPES),
            credential_no=text("SQRZJHM").upper(),
            applicant_name=text("SQRMC"),
            district_code=division,
            site_address=text("YDDZ"),
            business_type=code("YWLX", BUSINESS_TYPES),
            voltage_level=code("DYDJ", VOLTAGE_LEVELS),
            capacity_kva=float(capacity),
            project_code=project_code,
            filed_at=parse_platform_time(body.get("SBSJ"), "SBSJ"),
        )
    except ValidationError as exc:
        raise FieldError("body", f"{exc}") from exc


def callback_body(case: InboundCase) -> dict[str, Any]:
    """The callback body the platform sends for ``case`` (simulator side)."""
    body: dict[str, Any] = {
        "BJBH": case.case_no,
        "SXBM": case.item_code,
        "SQRZJLX": _code_of(CREDENTIAL_TYPES, case.credential_type, "credential_type"),
        "SQRZJHM": case.credential_no,
        "SQRMC": case.applicant_name,
        "XZQH": case.district_code,
        "YDDZ": case.site_address,
        "YWLX": _code_of(BUSINESS_TYPES, case.business_type, "business_type"),
        "DYDJ": _code_of(VOLTAGE_LEVELS, case.voltage_level, "voltage_level"),
        "RL": case.capacity_kva,
        "SBSJ": format_platform_time(case.filed_at, "filed_at"),
    }
    if case.project_code:
        body["XMDM"] = case.project_code
    return body


def _code_of(table: Mapping[str, str], word: str, field: str) -> str:
    for code, known in table.items():
        if known == word:
            return code
    raise FieldError(field, f"no code for {word!r}")
