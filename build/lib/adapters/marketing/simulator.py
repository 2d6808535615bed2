"""A loopback 营销系统 notice service: ReceiveNotice over SOAP 1.1, recording what it applies.

Serves the repository's WSDL at ``GET /ws/notice?wsdl`` and answers
``POST /ws/notice`` as the marketing system does: WS-Security UsernameToken
(PasswordDigest, fresh nonce) checked first, then the fields, then the
notice is applied once per TZID (a repeat is answered JG 1) or refused
(JG 2) if its kind is configured as rejected. Admin endpoints (besides
``adapters.simulation``'s):

- ``GET /_admin/notices``: ``{"notices": [...], "counts": {TZID: n}}``: the
  applied notices in arrival order (fields as received) and how many times
  each TZID was delivered.
- ``GET|PUT|DELETE /_admin/reject``: the notice kinds (TZLX) answered JG 2;
  ``PUT`` takes a JSON list and replaces the set.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from fastapi import FastAPI, Response
from lxml import etree

from adapters.marketing.errors import SOAP_PLATFORM, FaultCode
from adapters.marketing.mapping import (
    DUPLICATE,
    FIELDS,
    NAMESPACE,
    OPERATION,
    RECEIVED,
    REJECTED,
    RESPONSE,
    RESULT_MESSAGES,
    SERVICE_PATH,
    WSDL_PATH,
    parse_time,
)
from adapters.simulation import ADMIN_PREFIX, SimulatorControl, install_admin_set
from adapters.soap import SoapFault, answer_response, install_soap_service, username_token_check


def create_app(*, username: str, password: str, control: SimulatorControl | None = None) -> FastAPI:
    """The simulator app; ``control`` injects faults and records what it received."""
    control = control or SimulatorControl()
    notices: list[dict[str, str]] = []
    counts: Counter[str] = Counter()
    applied: set[str] = set()
    rejected_kinds: set[str] = set()

    app = FastAPI(title="营销系统 通知接收服务 (simulator)", openapi_url=None)
    app.state.control = control
    app.state.notices = notices
    app.state.notice_counts = counts
    app.state.rejected_kinds = rejected_kinds

    async def receive_notice(operation: etree._Element) -> Response:
        notice = _notice_fields(operation)
        notice_id, kind = notice["TZID"], notice["TZLX"]
        counts[notice_id] += 1
        if notice_id in applied:
            return _receipt(DUPLICATE, RESULT_MESSAGES[DUPLICATE])
        if kind in rejected_kinds:
            return _receipt(REJECTED, f"拒收: 不受理通知类型 {kind}")
        applied.add(notice_id)
        notices.append(notice)
        return _receipt(RECEIVED, RESULT_MESSAGES[RECEIVED])

    install_soap_service(
        app,
        path=SERVICE_PATH,
        wsdl_path=WSDL_PATH,
        operation=f"{{{NAMESPACE}}}{OPERATION}",
        platform=SOAP_PLATFORM,
        authenticate=username_token_check(username, password, auth_failed=FaultCode.AUTH_FAILED),
        control=control,
        handle=receive_notice,
    )

    @app.get(f"{ADMIN_PREFIX}/notices", include_in_schema=False)
    async def get_notices() -> dict[str, Any]:
        return {"notices": notices, "counts": dict(counts)}

    install_admin_set(app, "reject", rejected_kinds)

    return app


def _notice_fields(operation: etree._Element) -> dict[str, str]:
    """ReceiveNotice's fields, checked as the system does; E2001 naming the first bad one."""
    values = {
        etree.QName(child).localname: (child.text or "").strip()
        for child in operation
        if etree.QName(child).namespace == NAMESPACE
    }
    for name in FIELDS:
        if not values.get(name):
            raise SoapFault(FaultCode.INVALID_REQUEST, f"缺少字段 {name}")
    try:
        parse_time(values["FSSJ"])
    except ValueError:
        raise SoapFault(
            FaultCode.INVALID_REQUEST, f"FSSJ 时间格式错误: {values['FSSJ']!r}"
        ) from None
    try:
        content = json.loads(values["NR"])
    except ValueError:
        content = None
    if not isinstance(content, dict):
        raise SoapFault(FaultCode.INVALID_REQUEST, "NR 不是 JSON 对象")
    return {name: values[name] for name in FIELDS}


def _receipt(code: str, message: str) -> Response:
    return answer_response(SOAP_PLATFORM, RESPONSE, [("JG", code), ("XX", message)])
