"""A loopback 电子证照库: the QueryLicence SOAP 1.1 service over the seed's licences.

Serves the repository's WSDL at ``GET /ws/licence?wsdl`` and answers
``POST /ws/licence`` the way the platform does: WS-Security UsernameToken
(PasswordDigest with a fresh nonce, or PasswordText) checked first, then the
request context, then the licence or a SOAP Fault carrying the platform's
error code.
"""

from __future__ import annotations

from fastapi import FastAPI, Response
from lxml import etree

from adapters.licence.errors import SOAP_PLATFORM, FaultCode
from adapters.licence.mapping import (
    NAMESPACE,
    OPERATION,
    RESPONSE,
    SERVICE_PATH,
    WSDL_PATH,
    response_fields,
)
from adapters.simulation import SimulatorControl
from adapters.soap import SoapFault, answer_response, install_soap_service, username_token_check
from schemas.seed import Seed, SeedLicence

_REQUEST_CONTEXT = {"QQXT": "请求系统", "QQYY": "请求原因", "QQLSH": "请求流水号"}


def create_app(
    seed: Seed, *, username: str, password: str, control: SimulatorControl | None = None
) -> FastAPI:
    """The simulator app; ``control`` injects faults and records what it received."""
    if control is None:
        control = SimulatorControl()
    licences = {licence.uscc: licence for licence in seed.licences}

    app = FastAPI(title="电子证照库 (simulator)", openapi_url=None)
    app.state.control = control

    async def query_licence(operation: etree._Element) -> Response:
        return answer_response(
            SOAP_PLATFORM, RESPONSE, response_fields(_licence(operation, licences))
        )

    install_soap_service(
        app,
        path=SERVICE_PATH,
        wsdl_path=WSDL_PATH,
        operation=f"{{{NAMESPACE}}}{OPERATION}",
        platform=SOAP_PLATFORM,
        authenticate=username_token_check(
            username, password, auth_failed=FaultCode.AUTH_FAILED, accept_plain_text=True
        ),
        control=control,
        handle=query_licence,
    )
    return app


def _licence(operation: etree._Element, licences: dict[str, SeedLicence]) -> SeedLicence:
    values = {child.tag: (child.text or "").strip() for child in operation}
    for name, meaning in _REQUEST_CONTEXT.items():
        if not values.get(f"{{{NAMESPACE}}}{name}"):
            raise SoapFault(FaultCode.INVALID_REQUEST, f"缺少{meaning} ({name})")
    uscc = values.get(f"{{{NAMESPACE}}}TYSHXYDM", "")
    if len(uscc) != 18:
        raise SoapFault(FaultCode.INVALID_REQUEST, f"统一社会信用代码格式错误: {uscc!r}")
    licence = licences.get(uscc)
    if licence is None:
        raise SoapFault(FaultCode.NOT_FOUND, f"未查询到统一社会信用代码 {uscc} 的营业执照电子证照")
    return licence
