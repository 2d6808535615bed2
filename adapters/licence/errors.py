"""The 电子证照库's fault codes and their translation into the project's error tree.

The platform answers every failure with a SOAP 1.1 Fault (HTTP 500) whose
detail carries its own code (CWDM)::

    E1001 身份认证失败        → Unauthorized
    E1002 无权调用该服务      → Unauthorized
    E2001 请求参数错误        → PlatformRejected
    E3001 未查询到证照信息    → NotFound
    E9001 系统繁忙            → PlatformUnavailable (transient)
    E9999 系统内部错误        → PlatformUnavailable (transient)

A fault without a known code is transient if its faultcode is ``Server``
(SOAP 1.1: the same message may succeed later) and a rejection otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum

from zeep import exceptions as zeep_errors

from adapters.licence.mapping import UnexpectedResponse, fault_code
from adapters.resilience import httpx_errors
from schemas.errors import (
    ConnectorError,
    NotFound,
    PlatformRejected,
    PlatformUnavailable,
    Unauthorized,
)

PLATFORM = "licence"


class FaultCode(StrEnum):
    """错误代码 (CWDM) in the platform's ServiceFault."""

    AUTH_FAILED = "E1001"  # 身份认证失败
    FORBIDDEN = "E1002"  # 无权调用该服务
    INVALID_REQUEST = "E2001"  # 请求参数错误
    NOT_FOUND = "E3001"  # 未查询到证照信息
    BUSY = "E9001"  # 系统繁忙
    INTERNAL = "E9999"  # 系统内部错误


_UNAUTHORIZED = {FaultCode.AUTH_FAILED, FaultCode.FORBIDDEN}
_TRANSIENT = {FaultCode.BUSY, FaultCode.INTERNAL}


@contextmanager
def soap_errors() -> Iterator[None]:
    """Translate zeep and httpx failures of one call into ``schemas.errors``."""
    try:
        with httpx_errors(PLATFORM):
            yield
    except ConnectorError:
        raise
    except zeep_errors.Fault as exc:
        raise _from_fault(exc) from exc
    except zeep_errors.TransportError as exc:
        raise _from_status(exc.status_code, exc.message) from exc
    except UnexpectedResponse as exc:
        raise PlatformRejected(PLATFORM, f"unexpected answer: {exc}") from exc
    except zeep_errors.Error as exc:
        # XMLSyntaxError, XMLParseError, ValidationError, ...: the answer breaks the WSDL.
        raise PlatformRejected(PLATFORM, f"malformed answer ({type(exc).__name__}: {exc})") from exc


def _from_fault(fault: zeep_errors.Fault) -> ConnectorError:
    code = fault_code(fault.detail)
    message = fault.message or "SOAP fault without faultstring"
    if code == FaultCode.NOT_FOUND:
        return NotFound(f"{PLATFORM}: {message}", platform=PLATFORM, platform_code=code)
    if code in _UNAUTHORIZED:
        return Unauthorized(f"{PLATFORM}: {message}", platform=PLATFORM, platform_code=code)
    if code in _TRANSIENT or (code is None and _is_server_fault(fault.code)):
        return PlatformUnavailable(PLATFORM, message, platform_code=code or fault.code)
    return PlatformRejected(PLATFORM, message, platform_code=code or str(fault.code or ""))


def _is_server_fault(faultcode: object) -> bool:
    return isinstance(faultcode, str) and faultcode.rpartition(":")[2] == "Server"


def _from_status(status: int, message: str) -> ConnectorError:
    if status >= 500 or status == 429:
        return PlatformUnavailable(PLATFORM, f"answered HTTP {status}")
    if status in (401, 403):
        return Unauthorized(f"{PLATFORM}: answered HTTP {status}", platform=PLATFORM)
    return PlatformRejected(
        PLATFORM, message or f"answered HTTP {status}", platform_code=str(status)
    )
