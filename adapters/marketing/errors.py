"""The marketing system's failures in the connector's error tree.

A notice the system will not take is answered ``JG 2`` (拒收) with a reason:
``PlatformRejected`` with ``platform_code`` ``"2"``; the notice belongs in the
dead letters, not in another retry. Everything else comes as a SOAP 1.1 Fault
(HTTP 500) whose detail carries the system's code (CWDM)::

    E1001 身份认证失败        → Unauthorized
    E2001 请求参数错误        → PlatformRejected
    E9001 系统繁忙            → PlatformUnavailable (transient)
    E9999 系统内部错误        → PlatformUnavailable (transient)

A fault without a known code is transient if its faultcode is ``Server``
and a rejection otherwise; other HTTP 5xx are transient.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum

from zeep import exceptions as zeep_errors

from adapters.marketing.mapping import REJECTED, UnexpectedResponse, fault_code
from adapters.resilience import httpx_errors
from schemas.errors import ConnectorError, PlatformRejected, PlatformUnavailable, Unauthorized

PLATFORM = "marketing"


class FaultCode(StrEnum):
    """错误代码 (CWDM) in the system's ServiceFault."""

    AUTH_FAILED = "E1001"  # 身份认证失败
    INVALID_REQUEST = "E2001"  # 请求参数错误
    BUSY = "E9001"  # 系统繁忙
    INTERNAL = "E9999"  # 系统内部错误


TRANSIENT = frozenset({FaultCode.BUSY, FaultCode.INTERNAL})


def rejected(reason: str) -> PlatformRejected:
    """A notice answered ``JG 2`` (拒收)."""
    return PlatformRejected(PLATFORM, reason or "拒收", platform_code=REJECTED)


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
    except (UnexpectedResponse, zeep_errors.Error) as exc:
        # zeep's XMLSyntaxError, ValidationError, ...: the answer breaks the WSDL.
        raise PlatformRejected(PLATFORM, f"malformed answer ({type(exc).__name__}: {exc})") from exc


def _from_fault(fault: zeep_errors.Fault) -> ConnectorError:
    code = fault_code(fault.detail)
    message = fault.message or "SOAP fault without faultstring"
    if code == FaultCode.AUTH_FAILED:
        return Unauthorized(f"{PLATFORM}: {message}", platform=PLATFORM, platform_code=code)
    server_fault = isinstance(fault.code, str) and fault.code.rpartition(":")[2] == "Server"
    if code in TRANSIENT or (code is None and server_fault):
        return PlatformUnavailable(PLATFORM, message, platform_code=code or fault.code)
    return PlatformRejected(PLATFORM, message, platform_code=code or str(fault.code or ""))


def _from_status(status: int, message: str) -> ConnectorError:
    if status >= 500 or status == 429:
        return PlatformUnavailable(PLATFORM, f"answered HTTP {status}")
    if status in (401, 403):
        return Unauthorized(f"{PLATFORM}: answered HTTP {status}", platform=PLATFORM)
    return PlatformRejected(
        PLATFORM, message or f"answered HTTP {status}", platform_code=str(status)
    )
