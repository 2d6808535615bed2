"""What the contract suites share: signed callback receivers, SOAP wire checks, OpenAPI
schemas. Each helper asserts what a user of the platform would check."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import yaml
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from lxml import etree

from adapters.signing import MemoryNonceStore, verify_request
from schemas.errors import Unauthorized

USER_AGENT = "ywtb-connector/contract-test"
"""The caller's own User-Agent (the ``http`` fixture sends it)."""

# --- signed callbacks (our callback endpoints, as the gateway holds them) ---


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class SignedReceiver:
    """A callback endpoint in miniature: verifies every callback's signature (refusing
    with 4010), answers 503 to the first ``fail_first`` verified ones, then 200."""

    path: str
    app_id: str
    secret: str
    fail_first: int = 0
    deliveries: list[Delivery] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._nonces = MemoryNonceStore()
        self.app = FastAPI()
        self.app.add_api_route(self.path, self._receive, methods=["POST"])

    @property
    def bodies(self) -> list[bytes]:
        return [d.body for d in self.deliveries]

    @property
    def nonces(self) -> list[str]:
        return [d.headers["x-nonce"] for d in self.deliveries]

    async def _receive(self, request: Request) -> Response:
        body = await request.body()
        try:
            verify_request(
                request.method,
                request.url.path,
                body,
                request.headers,
                lookup_secret=lambda app: self.secret if app == self.app_id else None,
                allowed_algorithms={"hmac-sha256"},
                check_nonce=self._nonces.claim,
            )
        except Unauthorized as exc:
            self.refused.append(exc.code)
            return JSONResponse({"code": "4010", "msg": exc.detail}, status_code=401)
        status = 503 if len(self.deliveries) < self.fail_first else 200
        self.deliveries.append(Delivery(dict(request.headers), body, status))
        if status == 503:
            return JSONResponse({"code": "5000", "msg": "busy"}, status_code=503)
        return JSONResponse({"code": "0000", "msg": "成功"})


# --- OpenAPI 3.0 interface files --------------------------------------------


def openapi(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return document


def response_schema(
    document: dict[str, Any], path: str, method: str, status: str
) -> dict[str, Any]:
    """The JSON schema of an answer with this status, resolvable on its own."""
    response = document["paths"][path][method]["responses"][status]
    if "$ref" in response:
        response = document["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema = response["content"]["application/json"]["schema"]
    return {**schema, "components": document["components"]}


def validate_draft4(instance: Any, schema: dict[str, Any]) -> None:
    """OpenAPI 3.0 schema objects are (an extended subset of) JSON Schema draft 4."""
    jsonschema.validate(instance, schema, cls=jsonschema.Draft4Validator)


# --- SOAP 1.1 with a UsernameToken ------------------------------------------

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
WSDL = "http://schemas.xmlsoap.org/wsdl/"
WSDL_SOAP = "http://schemas.xmlsoap.org/wsdl/soap/"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
PASSWORD_DIGEST = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
    "#PasswordDigest"
)
SOAP_HEADERS = {"Content-Type": "text/xml; charset=utf-8"}


def wsdl_namespace(wsdl_path: Path) -> str:
    return etree.parse(str(wsdl_path)).getroot().get("targetNamespace", "")


def assert_digest_token(body: bytes, username: str, password: str) -> None:
    """The envelope carries a UsernameToken with a PasswordDigest and a nonce, never the
    password itself."""
    envelope = etree.fromstring(body)
    token = envelope.find(f"{{{SOAP11}}}Header/{{{WSSE}}}Security/{{{WSSE}}}UsernameToken")
    assert token is not None
    assert token.findtext(f"{{{WSSE}}}Username") == username
    given = token.find(f"{{{WSSE}}}Password")
    assert given is not None
    assert given.get("Type") == PASSWORD_DIGEST
    assert token.findtext(f"{{{WSSE}}}Nonce")
    assert password.encode() not in body


async def assert_replay_refused(
    http: httpx.AsyncClient, url: str, body: bytes, wsdl_path: Path
) -> None:
    """The same signed envelope sent again is refused as a client fault E1001."""
    replay = await http.post(url, content=body, headers=SOAP_HEADERS)

    assert replay.status_code == 500
    fault = etree.fromstring(replay.content).find(f"{{{SOAP11}}}Body/{{{SOAP11}}}Fault")
    assert fault is not None
    assert fault.findtext("faultcode") == "soap:Client"
    ns = wsdl_namespace(wsdl_path)
    assert fault.findtext(f"detail/{{{ns}}}ServiceFault/{{{ns}}}CWDM") == "E1001"


async def assert_serves_repository_wsdl(
    http: httpx.AsyncClient, url: str, wsdl_path: Path, operation: str
) -> etree._Element:
    """``GET url?wsdl`` is the repository's WSDL, byte for byte in C14N, with its address
    set to ``url``; returns it as served."""
    response = await http.get(url, params={"wsdl": ""})

    assert response.status_code == 200
    served = etree.fromstring(response.content)
    [address] = served.iter(f"{{{WSDL_SOAP}}}address")
    assert address.get("location") == url
    operations = [op.get("name") for op in served.iter(f"{{{WSDL}}}operation")]
    assert operation in operations
    repo = etree.parse(str(wsdl_path)).getroot()
    [repo_address] = repo.iter(f"{{{WSDL_SOAP}}}address")
    repo_address.set("location", address.get("location", ""))
    assert etree.tostring(served, method="c14n") == etree.tostring(repo, method="c14n")
    return served


async def requests_made_building(
    build: Callable[[httpx.AsyncClient], object],
) -> list[httpx.Request]:
    """The requests ``build`` makes over the client it is given (it should make none)."""
    requests: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(599)

    async with httpx.AsyncClient(transport=httpx.MockTransport(record)) as http:
        build(http)
    return requests
