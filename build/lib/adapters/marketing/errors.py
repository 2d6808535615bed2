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
and a rejection otherwise; other HTTP 5xx are transient
(``adapters.soap.zeep_errors`` applies this table to every call).
"""

from __future__ import annotations

from enum import StrEnum

from adapters.marketing.mapping import NAMESPACE, REJECTED
from adapters.soap import SoapPlatform
from schemas.errors import PlatformRejected

PLATFORM = "marketing"


class FaultCode(StrEnum):
    """错误代码 (CWDM) in the system's ServiceFault."""

    AUTH_FAILED = "E1001"  # 身份认证失败
    INVALID_REQUEST = "E2001"  # 请求参数错误
    BUSY = "E9001"  # 系统繁忙
    INTERNAL = "E9999"  # 系统内部错误


SOAP_PLATFORM = SoapPlatform(
    platform=PLATFORM,
    namespace=NAMESPACE,
    prefix="yx",
    invalid_request=FaultCode.INVALID_REQUEST,
    busy=FaultCode.BUSY,
    internal=FaultCode.INTERNAL,
    unauthorized=frozenset({FaultCode.AUTH_FAILED}),
)


def rejected(reason: str) -> PlatformRejected:
    """A notice answered ``JG 2`` (拒收)."""
    return PlatformRejected(PLATFORM, reason or "拒收", platform_code=REJECTED)
