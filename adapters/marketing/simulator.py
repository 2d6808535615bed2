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

import base64
import binascii
import copy
import hashlib
import hmac
import json
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Body, FastAPI, Request, Response
from lxml import etree

from adapters.marketing.errors import TRANSIENT, FaultCode
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
    fault_detail,
    parse_time,
)
from adapters.simulation import ADMIN_PREFIX, SimulatorControl, install_control

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
WSDL_SOAP = "http://schemas.xmlsoap.org/wsdl/soap/"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
PASSWORD_DIGEST = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
    "#PasswordDigest"
)
CLOCK_SKEW = timedelta(minutes=5)
SOAP_CONTENT_TYPE = "text/xml; charset=utf-8"


class _Fault(Exception):
    """Answer the current request with this SOAP Fault."""

    def __init__(self, code: FaultCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def create_app(*, username: str, password: str, control: SimulatorControl | None = None) -> FastAPI:
    """The simulator app; ``control`` injects faults and records what it received."""
    control = control or SimulatorControl()
    authenticate = _authenticator(username, password)
    wsdl = etree.parse(str(WSDL_PATH), _parser())
    notices: list[dict[str, str]] = []
    counts: Counter[str] = Counter()
    applied: set[str] = set()
    rejected_kinds: set[str] = set()

    app = FastAPI(title="营销系统 通知接收服务 (simulator)", openapi_url=None)
    app.state.control = control
    app.state.notices = notices
    app.state.notice_counts = counts
    app.state.rejected_kinds = rejected_kinds
    install_control(app, control, _injected_fault)

    @app.get(SERVICE_PATH)
    async def get_wsdl(request: Request) -> Response:
        if "wsdl" not in request.query_params:
            return Response("GET this address with ?wsdl", status_code=404)
        served = _with_address(wsdl, str(request.url.replace(query="", fragment="")))
        return Response(served, media_type=SOAP_CONTENT_TYPE)

    @app.post(SERVICE_PATH)
    async def post_soap(request: Request) -> Response:
        try:
            envelope = _parse_envelope(await request.body())
            operation = _operation(envelope)
            control.record(OPERATION)
            authenticate(envelope)
            notice = _notice_fields(operation)
        except _Fault as fault:
            return _fault(fault.code, fault.message)
        notice_id, kind = notice["TZID"], notice["TZLX"]
        counts[notice_id] += 1
        if notice_id in applied:
            return _receipt(DUPLICATE, RESULT_MESSAGES[DUPLICATE])
        if kind in rejected_kinds:
            return _receipt(REJECTED, f"拒收: 不受理通知类型 {kind}")
        applied.add(notice_id)
        notices.append(notice)
        return _receipt(RECEIVED, RESULT_MESSAGES[RECEIVED])

    @app.get(f"{ADMIN_PREFIX}/notices", include_in_schema=False)
    async def get_notices() -> dict[str, Any]:
        return {"notices": notices, "counts": dict(counts)}

    @app.get(f"{ADMIN_PREFIX}/reject", include_in_schema=False)
    async def get_rejected() -> list[str]:
        return sorted(rejected_kinds)

    @app.put(f"{ADMIN_PREFIX}/reject", include_in_schema=False)
    async def put_rejected(kinds: Annotated[list[str], Body()]) -> list[str]:
        rejected_kinds.clear()
        rejected_kinds.update(kinds)
        return sorted(rejected_kinds)

    @app.delete(f"{ADMIN_PREFIX}/reject", include_in_schema=False, status_code=204)
    async def clear_rejected() -> Response:
        rejected_kinds.clear()
        return Response(status_code=204)

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
            raise _Fault(FaultCode.INVALID_REQUEST, f"缺少字段 {name}")
    try:
        parse_time(values["FSSJ"])
    except ValueError:
        raise _Fault(FaultCode.INVALID_REQUEST, f"FSSJ 时间格式错误: {values['FSSJ']!r}") from None
    try:
        content = json.loads(values["NR"])
    except ValueError:
        content = None
    if not isinstance(content, dict):
        raise _Fault(FaultCode.INVALID_REQUEST, "NR 不是 JSON 对象")
    return {name: values[name] for name in FIELDS}


# --- WS-Security -----------------------------------------------------------


def _authenticator(username: str, password: str) -> Callable[[etree._Element], None]:
    """Check a UsernameToken with PasswordDigest; refuse stale tokens and replayed nonces."""
    seen_nonces: dict[str, datetime] = {}

    def authenticate(envelope: etree._Element) -> None:
        token = envelope.find(f"{{{SOAP_ENV}}}Header/{{{WSSE}}}Security/{{{WSSE}}}UsernameToken")
        if token is None:
            raise _Fault(FaultCode.AUTH_FAILED, "身份认证失败: 缺少 UsernameToken")
        given = token.find(f"{{{WSSE}}}Password")
        if (
            token.findtext(f"{{{WSSE}}}Username") != username
            or given is None
            or given.get("Type") != PASSWORD_DIGEST
        ):
            raise _Fault(FaultCode.AUTH_FAILED, "身份认证失败: 用户名或密码错误")
        nonce = token.findtext(f"{{{WSSE}}}Nonce") or ""
        created = token.findtext(f"{{{WSU}}}Created") or ""
        _check_fresh(nonce, created, seen_nonces)
        if not hmac.compare_digest((given.text or "").strip(), _digest(nonce, created, password)):
            raise _Fault(FaultCode.AUTH_FAILED, "身份认证失败: 用户名或密码错误")
        seen_nonces[nonce] = datetime.now(UTC)

    return authenticate


def _check_fresh(nonce: str, created: str, seen: dict[str, datetime]) -> None:
    now = datetime.now(UTC)
    for old in [n for n, at in seen.items() if now - at > 2 * CLOCK_SKEW]:
        del seen[old]
    try:
        at = datetime.fromisoformat(created)
    except ValueError:
        raise _Fault(FaultCode.AUTH_FAILED, "身份认证失败: Created 时间格式错误") from None
    if at.tzinfo is None or abs(now - at) > CLOCK_SKEW:
        raise _Fault(FaultCode.AUTH_FAILED, "身份认证失败: 令牌已过期")
    if not nonce or nonce in seen:
        raise _Fault(FaultCode.AUTH_FAILED, "身份认证失败: Nonce 缺失或重复")


def _digest(nonce_b64: str, created: str, password: str) -> str:
    """PasswordDigest = Base64(SHA-1(nonce + created + password))."""
    try:
        nonce = base64.b64decode(nonce_b64, validate=True)
    except binascii.Error:
        raise _Fault(FaultCode.AUTH_FAILED, "身份认证失败: Nonce 不是 Base64") from None
    sha1 = hashlib.sha1(nonce + created.encode() + password.encode(), usedforsecurity=False)
    return base64.b64encode(sha1.digest()).decode("ascii")


# --- SOAP envelopes --------------------------------------------------------


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def _parse_envelope(body: bytes) -> etree._Element:
    try:
        envelope = etree.fromstring(body, _parser())
    except etree.XMLSyntaxError as exc:
        raise _Fault(FaultCode.INVALID_REQUEST, f"请求报文不是合法的 XML: {exc}") from None
    if envelope.tag != f"{{{SOAP_ENV}}}Envelope":
        raise _Fault(FaultCode.INVALID_REQUEST, "请求报文不是 SOAP 1.1 Envelope")
    return envelope


def _operation(envelope: etree._Element) -> etree._Element:
    body = envelope.find(f"{{{SOAP_ENV}}}Body")
    operation = body[0] if body is not None and len(body) else None
    if operation is None or operation.tag != f"{{{NAMESPACE}}}{OPERATION}":
        name = "无" if operation is None else etree.QName(operation).localname
        raise _Fault(FaultCode.INVALID_REQUEST, f"不支持的操作: {name}")
    return operation


def _with_address(wsdl: etree._ElementTree, url: str) -> bytes:
    served = copy.deepcopy(wsdl.getroot())
    for address in served.iter(f"{{{WSDL_SOAP}}}address"):
        address.set("location", url)
    return etree.tostring(served, xml_declaration=True, encoding="UTF-8")


def _envelope(payload: etree._Element, status: int = 200) -> Response:
    envelope = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"soap": SOAP_ENV})
    etree.SubElement(envelope, f"{{{SOAP_ENV}}}Body").append(payload)
    etree.cleanup_namespaces(envelope)
    body = etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")
    return Response(body, status_code=status, media_type=SOAP_CONTENT_TYPE)


def _receipt(code: str, message: str) -> Response:
    answer = etree.Element(f"{{{NAMESPACE}}}{RESPONSE}", nsmap={"yx": NAMESPACE})
    etree.SubElement(answer, f"{{{NAMESPACE}}}JG").text = code
    etree.SubElement(answer, f"{{{NAMESPACE}}}XX").text = message
    return _envelope(answer)


def _fault(code: FaultCode, message: str, status: int = 500) -> Response:
    """A SOAP 1.1 Fault; ``Server`` for the system's own trouble, ``Client`` otherwise."""
    fault = etree.Element(f"{{{SOAP_ENV}}}Fault", nsmap={"soap": SOAP_ENV})
    faultcode = "soap:Server" if code in TRANSIENT else "soap:Client"
    etree.SubElement(fault, "faultcode").text = faultcode
    etree.SubElement(fault, "faultstring").text = message
    etree.SubElement(fault, "detail").append(fault_detail(code, message))
    return _envelope(fault, status)


def _injected_fault(status: int, message: str) -> Response:
    return _fault(FaultCode.BUSY if status == 503 else FaultCode.INTERNAL, message, status)
