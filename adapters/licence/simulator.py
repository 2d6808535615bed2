"""A loopback 电子证照库: the QueryLicence SOAP 1.1 service over the seed's licences.

Serves the repository's WSDL at ``GET /ws/licence?wsdl`` and answers
``POST /ws/licence`` the way the platform does: WS-Security UsernameToken
checked first, then the request context, then the licence or a SOAP Fault
carrying the platform's error code.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import hmac
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI, Request, Response
from lxml import etree

from adapters.licence.errors import FaultCode
from adapters.licence.mapping import (
    NAMESPACE,
    OPERATION,
    RESPONSE,
    SERVICE_PATH,
    WSDL_PATH,
    fault_detail,
    response_fields,
)
from adapters.simulation import SimulatorControl, install_control
from schemas.seed import Seed, SeedLicence

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
WSDL_SOAP = "http://schemas.xmlsoap.org/wsdl/soap/"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
TOKEN_PROFILE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
PASSWORD_DIGEST = f"{TOKEN_PROFILE}#PasswordDigest"
PASSWORD_TEXT = f"{TOKEN_PROFILE}#PasswordText"
CLOCK_SKEW = timedelta(minutes=5)
SOAP_CONTENT_TYPE = "text/xml; charset=utf-8"

_TRANSIENT = {FaultCode.BUSY, FaultCode.INTERNAL}
_REQUEST_CONTEXT = {"QQXT": "请求系统", "QQYY": "请求原因", "QQLSH": "请求流水号"}


class _Fault(Exception):
    """Answer the current request with this SOAP Fault."""

    def __init__(self, code: FaultCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def create_app(
    seed: Seed, *, username: str, password: str, control: SimulatorControl | None = None
) -> FastAPI:
    """The simulator app; ``control`` injects faults and records what it received."""
    if control is None:
        control = SimulatorControl()
    licences = {licence.uscc: licence for licence in seed.licences}
    authenticate = _authenticator(username, password)
    wsdl = etree.parse(str(WSDL_PATH), _parser())

    app = FastAPI(title="电子证照库 (simulator)", openapi_url=None)
    app.state.control = control
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
            return _envelope(_query_licence(operation, licences))
        except _Fault as fault:
            return _fault(fault.code, fault.message)

    return app


def _query_licence(operation: etree._Element, licences: dict[str, SeedLicence]) -> etree._Element:
    values = {child.tag: (child.text or "").strip() for child in operation}
    for name, meaning in _REQUEST_CONTEXT.items():
        if not values.get(f"{{{NAMESPACE}}}{name}"):
            raise _Fault(FaultCode.INVALID_REQUEST, f"缺少{meaning} ({name})")
    uscc = values.get(f"{{{NAMESPACE}}}TYSHXYDM", "")
    if len(uscc) != 18:
        raise _Fault(FaultCode.INVALID_REQUEST, f"统一社会信用代码格式错误: {uscc!r}")
    licence = licences.get(uscc)
    if licence is None:
        raise _Fault(FaultCode.NOT_FOUND, f"未查询到统一社会信用代码 {uscc} 的营业执照电子证照")
    answer = etree.Element(f"{{{NAMESPACE}}}{RESPONSE}", nsmap={"dzzz": NAMESPACE})
    for name, text in response_fields(licence):
        etree.SubElement(answer, f"{{{NAMESPACE}}}{name}").text = text
    return answer


# --- WS-Security -----------------------------------------------------------


def _authenticator(username: str, password: str) -> Callable[[etree._Element], None]:
    """Check a UsernameToken (PasswordDigest or PasswordText); refuse replayed nonces."""
    seen_nonces: dict[str, datetime] = {}

    def authenticate(envelope: etree._Element) -> None:
        token = envelope.find(f"{{{SOAP_ENV}}}Header/{{{WSSE}}}Security/{{{WSSE}}}UsernameToken")
        if token is None:
            raise _Fault(FaultCode.AUTH_FAILED, "身份认证失败: 缺少 UsernameToken")
        given = token.find(f"{{{WSSE}}}Password")
        if token.findtext(f"{{{WSSE}}}Username") != username or given is None:
            raise _Fault(FaultCode.AUTH_FAILED, "身份认证失败: 用户名或密码错误")
        kind = given.get("Type", PASSWORD_TEXT)
        if kind == PASSWORD_TEXT:
            ok = hmac.compare_digest((given.text or "").encode(), password.encode())
        elif kind == PASSWORD_DIGEST:
            nonce = token.findtext(f"{{{WSSE}}}Nonce") or ""
            created = token.findtext(f"{{{WSU}}}Created") or ""
            _check_fresh(nonce, created, seen_nonces)
            ok = hmac.compare_digest((given.text or "").strip(), _digest(nonce, created, password))
            if ok:
                seen_nonces[nonce] = datetime.now(UTC)
        else:
            ok = False
        if not ok:
            raise _Fault(FaultCode.AUTH_FAILED, "身份认证失败: 用户名或密码错误")

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


def _fault(code: FaultCode, message: str, status: int = 500) -> Response:
    """A SOAP 1.1 Fault; ``Server`` for the platform's own trouble, ``Client`` otherwise."""
    fault = etree.Element(f"{{{SOAP_ENV}}}Fault", nsmap={"soap": SOAP_ENV})
    etree.SubElement(fault, "faultcode").text = (
        "soap:Server" if code in _TRANSIENT else "soap:Client"
    )
    etree.SubElement(fault, "faultstring").text = message
    etree.SubElement(fault, "detail").append(fault_detail(code, message))
    return _envelope(fault, status)


def _injected_fault(status: int, message: str) -> Response:
    return _fault(FaultCode.BUSY if status == 503 else FaultCode.INTERNAL, message, status)
