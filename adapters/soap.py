"""SOAP 1.1 with WS-Security UsernameToken, as the SOAP platforms (电子证照库, 营销系统) speak it.

Both sides of the wire, parameterised by the platform's specifics:

- client side: zeep's async transport over a caller-owned ``httpx.AsyncClient``
  (``HttpxTransport``), the service proxy built from a WSDL in the repository
  (``service_proxy``), and the translation of zeep's exceptions into the
  project's error tree (``zeep_errors``, with ``SoapPlatform.classify_fault``);
- simulator side: the UsernameToken check (PasswordDigest, clock window, nonce
  replay), envelope parsing and operation lookup, the WSDL served with its
  address rewritten, and the envelope and fault writers
  (``install_soap_service``).

Every platform reports failures the same way: a SOAP Fault (HTTP 500) whose
detail is a ``ServiceFault`` with the platform's code (CWDM) and message (CWXX)
in the platform's namespace. What the codes mean is the platform's own table.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import hmac
from collections.abc import Awaitable, Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import httpx
from fastapi import FastAPI, Request, Response
from lxml import etree
from zeep import AsyncClient, Settings
from zeep import exceptions as zeep_exceptions
from zeep.helpers import serialize_object
from zeep.proxy import AsyncServiceProxy
from zeep.transports import AsyncTransport
from zeep.wsse.username import UsernameToken

from adapters.bounded import send_bounded
from adapters.resilience import (
    CircuitBreaker,
    httpx_errors,
    raise_for_server_error,
    retry_transient,
)
from adapters.simulation import ErrorResponse, SimulatorControl, install_control
from schemas.errors import (
    ConnectorError,
    NotFound,
    PlatformRejected,
    PlatformUnavailable,
    Unauthorized,
)

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
WSDL_SOAP = "http://schemas.xmlsoap.org/wsdl/soap/"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
TOKEN_PROFILE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
PASSWORD_DIGEST = f"{TOKEN_PROFILE}#PasswordDigest"
PASSWORD_TEXT = f"{TOKEN_PROFILE}#PasswordText"
CLOCK_SKEW = timedelta(minutes=5)
T = TypeVar("T")
SOAP_CONTENT_TYPE = "text/xml; charset=utf-8"


class UnexpectedResponse(ValueError):
    """The platform answered something its own interface does not allow."""


@dataclass(frozen=True)
class SoapPlatform:
    """One SOAP platform: its name, its namespace, and what its fault codes (CWDM) mean.

    ``busy`` and ``internal`` are transient (the platform's own trouble);
    ``unauthorized`` and ``not_found`` codes become those errors; any other
    code is a rejection. A fault without a code is transient if its faultcode
    is ``Server`` (SOAP 1.1: the same message may succeed later). Simulators
    answer malformed requests with ``invalid_request``, injected 503s with
    ``busy`` and 500s with ``internal``.
    """

    platform: str
    namespace: str
    prefix: str
    invalid_request: str
    busy: str
    internal: str
    unauthorized: frozenset[str]
    not_found: frozenset[str] = frozenset()

    @property
    def transient(self) -> frozenset[str]:
        return frozenset({self.busy, self.internal})

    def detail(self, code: str, message: str) -> etree._Element:
        """The ServiceFault element that goes inside soap:Fault/detail."""
        detail = etree.Element(self._name("ServiceFault"), nsmap={self.prefix: self.namespace})
        etree.SubElement(detail, self._name("CWDM")).text = code
        etree.SubElement(detail, self._name("CWXX")).text = message
        return detail

    def code_in(self, detail: object) -> str | None:
        """The platform's error code (CWDM) in a soap:Fault/detail element, if any."""
        if not isinstance(detail, etree._Element):
            return None
        code = detail.findtext(f"{self._name('ServiceFault')}/{self._name('CWDM')}")
        return code.strip() if code else None

    def classify_fault(self, fault: zeep_exceptions.Fault) -> ConnectorError:
        """The error a SOAP Fault from this platform stands for."""
        platform, code = self.platform, self.code_in(fault.detail)
        message = fault.message or "SOAP fault without faultstring"
        if code in self.not_found:
            return NotFound(f"{platform}: {message}", platform=platform, platform_code=code)
        if code in self.unauthorized:
            return Unauthorized(f"{platform}: {message}", platform=platform, platform_code=code)
        if code in self.transient or (code is None and _is_server_fault(fault.code)):
            return PlatformUnavailable(platform, message, platform_code=code or fault.code)
        return PlatformRejected(platform, message, platform_code=code or str(fault.code or ""))

    def _name(self, local: str) -> str:
        return f"{{{self.namespace}}}{local}"


def _is_server_fault(faultcode: object) -> bool:
    return isinstance(faultcode, str) and faultcode.rpartition(":")[2] == "Server"


# --- client side -----------------------------------------------------------


class HttpxTransport(AsyncTransport):
    """zeep's async transport over a caller-owned ``httpx.AsyncClient``.

    zeep 4.3's own constructor would create a second (sync) client for loading
    documents and overwrite the passed client's default headers; this one does
    neither, puts a timeout on every call, refuses to fetch any document (WSDLs
    are files in the repository) and names ``platform`` in its errors.
    """

    def __init__(self, http: httpx.AsyncClient, timeout_s: float, *, platform: str) -> None:
        # AsyncTransport.__init__ is skipped on purpose (see above); these are
        # the attributes the zeep Transport methods read.
        self.client = http
        self.cache = None
        self._close_session = False
        self._timeout = httpx.Timeout(timeout_s)
        self._platform = platform

    def _load_remote_data(self, url: str) -> bytes:
        raise RuntimeError(f"refusing to fetch {url}: WSDLs are read from the repository")

    async def post(self, address: str, message: bytes, headers: dict[str, str]) -> httpx.Response:
        request = self.client.build_request(
            "POST", address, content=message, headers=headers, timeout=self._timeout
        )
        response = await send_bounded(self.client, request)
        # SOAP 1.1 carries faults in HTTP 500, which zeep parses; any other
        # 5xx (or 429) comes from the platform's front end and is transient.
        if response.status_code != 500:
            raise_for_server_error(self._platform, response)
        return response

    async def aclose(self) -> None:
        """The httpx client belongs to the caller, who closes it."""


def service_proxy(
    *,
    wsdl_path: Path,
    binding: str,
    address: str,
    username: str,
    password: str,
    http: httpx.AsyncClient,
    timeout_s: float,
    platform: str,
) -> AsyncServiceProxy:
    """The async service of ``binding`` at ``address``, signed with a UsernameToken
    (PasswordDigest); zeep's secure parser settings stay on."""
    # zeep ships py.typed but leaves most signatures untyped.
    token = UsernameToken(username, password, use_digest=True, zulu_timestamp=True)  # type: ignore[no-untyped-call]
    zeep_client = AsyncClient(  # type: ignore[no-untyped-call]
        str(wsdl_path),
        wsse=token,
        transport=HttpxTransport(http, timeout_s, platform=platform),
        settings=Settings(forbid_dtd=True, forbid_entities=True, forbid_external=True),
    )
    # AsyncClient.create_service would return a synchronous proxy.
    return AsyncServiceProxy(  # type: ignore[no-untyped-call]
        zeep_client, zeep_client.wsdl.bindings[binding], address=address
    )


class SoapClient:
    """What every client of the SOAP platforms shares.

    The WSDL is read from the repository, never fetched; calls go to
    ``<base_url><service_path>`` over the caller's ``httpx.AsyncClient``, signed
    with a WS-Security UsernameToken (PasswordDigest), each one timed out,
    retried on transient errors and guarded by ``breaker`` (default: one of its
    own). A subclass names its platform, WSDL, binding and path, and its
    operations, each one ``call``.
    """

    soap_platform: SoapPlatform
    wsdl_path: Path
    binding: str
    service_path: str

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        base_url: str,
        username: str,
        password: str,
        timeout_s: float = 5.0,
        attempts: int = 3,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        platform = self.soap_platform.platform
        self._attempts = attempts
        self.breaker = breaker or CircuitBreaker(platform)
        self._service = service_proxy(
            wsdl_path=self.wsdl_path,
            binding=self.binding,
            address=base_url.rstrip("/") + self.service_path,
            username=username,
            password=password,
            http=http,
            timeout_s=timeout_s,
            platform=platform,
        )

    async def call(
        self, soap_operation: str, read: Callable[[object], T], *, operation: str, **request: str
    ) -> T:
        """``read`` of the answer to ``operation`` (as a mapping); raises what ``read``
        raises, a translated fault or, after the last attempt (at once while the breaker
        is open), ``PlatformUnavailable``."""
        platform = self.soap_platform
        async for attempt in retry_transient(self._attempts):
            with (
                attempt,
                self.breaker.guard(operation),
                zeep_errors(platform.platform, platform.classify_fault),
            ):
                reply = await getattr(self._service, soap_operation)(**request)
                return read(serialize_object(reply, dict))  # type: ignore[no-untyped-call]
        raise AssertionError("unreachable: retry_transient re-raises the last error")


@contextmanager
def zeep_errors(
    platform: str, classify_fault: Callable[[zeep_exceptions.Fault], ConnectorError]
) -> Iterator[None]:
    """Translate zeep and httpx failures of one call into ``schemas.errors``.

    ``classify_fault`` says what a SOAP Fault of this platform stands for
    (``SoapPlatform.classify_fault``); HTTP statuses zeep reports are read the same
    way for every platform.
    """
    try:
        with httpx_errors(platform):
            yield
    except ConnectorError:
        raise
    except zeep_exceptions.Fault as exc:
        raise classify_fault(exc) from exc
    except zeep_exceptions.TransportError as exc:
        raise _from_status(platform, exc.status_code, exc.message) from exc
    except UnexpectedResponse as exc:
        raise PlatformRejected(platform, f"unexpected answer: {exc}") from exc
    except zeep_exceptions.Error as exc:
        # XMLSyntaxError, XMLParseError, ValidationError, ...: the answer breaks the WSDL.
        raise PlatformRejected(platform, f"malformed answer ({type(exc).__name__}: {exc})") from exc


def _from_status(platform: str, status: int, message: str) -> ConnectorError:
    if status >= 500 or status == 429:
        return PlatformUnavailable(platform, f"answered HTTP {status}")
    if status in (401, 403):
        return Unauthorized(f"{platform}: answered HTTP {status}", platform=platform)
    return PlatformRejected(
        platform, message or f"answered HTTP {status}", platform_code=str(status)
    )


# --- simulator side --------------------------------------------------------


class SoapFault(Exception):
    """Answer the current request with this SOAP Fault (code: the platform's CWDM)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


Authenticate = Callable[[etree._Element], None]
"""Checks a request envelope's credentials; raises ``SoapFault`` if they fail."""


def username_token_check(
    username: str, password: str, *, auth_failed: str, accept_plain_text: bool = False
) -> Authenticate:
    """Check a UsernameToken with PasswordDigest (or, if accepted, PasswordText).

    A digest token must be fresh (``Created`` within ``CLOCK_SKEW``) and its
    nonce unseen; failures raise ``SoapFault(auth_failed, ...)``.
    """
    seen_nonces: dict[str, datetime] = {}

    def fail(reason: str) -> SoapFault:
        return SoapFault(auth_failed, f"身份认证失败: {reason}")

    def authenticate(envelope: etree._Element) -> None:
        token = envelope.find(f"{{{SOAP_ENV}}}Header/{{{WSSE}}}Security/{{{WSSE}}}UsernameToken")
        if token is None:
            raise fail("缺少 UsernameToken")
        given = token.find(f"{{{WSSE}}}Password")
        if token.findtext(f"{{{WSSE}}}Username") != username or given is None:
            raise fail("用户名或密码错误")
        kind = given.get("Type", PASSWORD_TEXT)
        nonce = token.findtext(f"{{{WSSE}}}Nonce") or ""
        if kind == PASSWORD_DIGEST:
            created = token.findtext(f"{{{WSU}}}Created") or ""
            _check_fresh(nonce, created, seen_nonces, fail)
            ok = hmac.compare_digest(
                (given.text or "").strip(), _digest(nonce, created, password, fail)
            )
        elif kind == PASSWORD_TEXT and accept_plain_text:
            ok = hmac.compare_digest((given.text or "").encode(), password.encode())
        else:
            ok = False
        if not ok:
            raise fail("用户名或密码错误")
        if kind == PASSWORD_DIGEST:
            seen_nonces[nonce] = datetime.now(UTC)

    return authenticate


def _check_fresh(
    nonce: str, created: str, seen: dict[str, datetime], fail: Callable[[str], SoapFault]
) -> None:
    now = datetime.now(UTC)
    for old in [n for n, at in seen.items() if now - at > 2 * CLOCK_SKEW]:
        del seen[old]
    try:
        at = datetime.fromisoformat(created)
    except ValueError:
        raise fail("Created 时间格式错误") from None
    if at.tzinfo is None or abs(now - at) > CLOCK_SKEW:
        raise fail("令牌已过期")
    if not nonce or nonce in seen:
        raise fail("Nonce 缺失或重复")


def _digest(nonce_b64: str, created: str, password: str, fail: Callable[[str], SoapFault]) -> str:
    """PasswordDigest = Base64(SHA-1(nonce + created + password))."""
    try:
        nonce = base64.b64decode(nonce_b64, validate=True)
    except binascii.Error:
        raise fail("Nonce 不是 Base64") from None
    sha1 = hashlib.sha1(nonce + created.encode() + password.encode(), usedforsecurity=False)
    return base64.b64encode(sha1.digest()).decode("ascii")


def xml_parser() -> etree.XMLParser:
    """No entities, no network, no DTD: the parser for anything a peer sends."""
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def parse_envelope(body: bytes, *, invalid_request: str) -> etree._Element:
    """A SOAP 1.1 Envelope, or ``SoapFault(invalid_request, ...)``."""
    try:
        envelope = etree.fromstring(body, xml_parser())
    except etree.XMLSyntaxError as exc:
        raise SoapFault(invalid_request, f"请求报文不是合法的 XML: {exc}") from None
    if envelope.tag != f"{{{SOAP_ENV}}}Envelope":
        raise SoapFault(invalid_request, "请求报文不是 SOAP 1.1 Envelope")
    return envelope


def find_operation(
    envelope: etree._Element, operation: str, *, invalid_request: str
) -> etree._Element:
    """The Body's element if it is ``operation`` (a Clark name), or ``SoapFault``."""
    body = envelope.find(f"{{{SOAP_ENV}}}Body")
    found = body[0] if body is not None and len(body) else None
    if found is None or found.tag != operation:
        name = "无" if found is None else etree.QName(found).localname
        raise SoapFault(invalid_request, f"不支持的操作: {name}")
    return found


def wsdl_with_address(wsdl: etree._ElementTree, url: str) -> bytes:
    """The WSDL with every soap:address pointing at ``url``."""
    served = copy.deepcopy(wsdl.getroot())
    for address in served.iter(f"{{{WSDL_SOAP}}}address"):
        address.set("location", url)
    return etree.tostring(served, xml_declaration=True, encoding="UTF-8")


def envelope_response(payload: etree._Element, status: int = 200) -> Response:
    """``payload`` in a SOAP 1.1 Envelope's Body."""
    envelope = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"soap": SOAP_ENV})
    etree.SubElement(envelope, f"{{{SOAP_ENV}}}Body").append(payload)
    etree.cleanup_namespaces(envelope)
    body = etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")
    return Response(body, status_code=status, media_type=SOAP_CONTENT_TYPE)


def fault_response(platform: SoapPlatform, code: str, message: str, status: int = 500) -> Response:
    """A SOAP 1.1 Fault; ``Server`` for the platform's own trouble, ``Client`` otherwise."""
    fault = etree.Element(f"{{{SOAP_ENV}}}Fault", nsmap={"soap": SOAP_ENV})
    faultcode = "soap:Server" if code in platform.transient else "soap:Client"
    etree.SubElement(fault, "faultcode").text = faultcode
    etree.SubElement(fault, "faultstring").text = message
    etree.SubElement(fault, "detail").append(platform.detail(code, message))
    return envelope_response(fault, status)


def injected_fault(platform: SoapPlatform) -> ErrorResponse:
    """How ``install_control`` answers an injected failure: busy for 503, internal otherwise."""

    def answer(status: int, message: str) -> Response:
        code = platform.busy if status == 503 else platform.internal
        return fault_response(platform, code, message, status)

    return answer


def install_soap_service(
    app: FastAPI,
    *,
    path: str,
    wsdl_path: Path,
    operation: str,
    platform: SoapPlatform,
    authenticate: Authenticate,
    control: SimulatorControl,
    handle: Callable[[etree._Element], Awaitable[Response]],
) -> None:
    """Serve ``GET path?wsdl`` and answer ``POST path`` as a SOAP 1.1 platform does.

    A request is parsed, its operation (a Clark name) found and counted in
    ``control``, its credentials checked, and then ``handle``d; a ``SoapFault``
    raised anywhere on the way is answered as the platform's fault.
    """
    wsdl = etree.parse(str(wsdl_path), xml_parser())
    operation_name = etree.QName(operation).localname
    install_control(app, control, injected_fault(platform))

    @app.get(path)
    async def get_wsdl(request: Request) -> Response:
        if "wsdl" not in request.query_params:
            return Response("GET this address with ?wsdl", status_code=404)
        served = wsdl_with_address(wsdl, str(request.url.replace(query="", fragment="")))
        return Response(served, media_type=SOAP_CONTENT_TYPE)

    @app.post(path)
    async def post_soap(request: Request) -> Response:
        try:
            envelope = parse_envelope(
                await request.body(), invalid_request=platform.invalid_request
            )
            found = find_operation(envelope, operation, invalid_request=platform.invalid_request)
            control.record(operation_name)
            authenticate(envelope)
            return await handle(found)
        except SoapFault as fault:
            return fault_response(platform, fault.code, fault.message)


def answer_response(
    platform: SoapPlatform, name: str, fields: Collection[tuple[str, str]]
) -> Response:
    """An operation's answer: element ``name`` with one child per field, in order."""
    namespace = platform.namespace
    answer = etree.Element(f"{{{namespace}}}{name}", nsmap={platform.prefix: namespace})
    for field, text in fields:
        etree.SubElement(answer, f"{{{namespace}}}{field}").text = text
    return envelope_response(answer)
