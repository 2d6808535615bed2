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
(SOAP 1.1: the same message may succeed later) and a rejection otherwise;
``adapters.soap.zeep_errors`` applies this table to every call.
"""

from __future__ import annotations

from enum import StrEnum

from adapters.licence.mapping import NAMESPACE
from adapters.soap import SoapPlatform

PLATFORM = "licence"


class FaultCode(StrEnum):
    """错误代码 (CWDM) in the platform's ServiceFault."""

    AUTH_FAILED = "E1001"  # 身份认证失败
    FORBIDDEN = "E1002"  # 无权调用该服务
    INVALID_REQUEST = "E2001"  # 请求参数错误
    NOT_FOUND = "E3001"  # 未查询到证照信息
    BUSY = "E9001"  # 系统繁忙
    INTERNAL = "E9999"  # 系统内部错误


SOAP_PLATFORM = SoapPlatform(
    platform=PLATFORM,
    namespace=NAMESPACE,
    prefix="dzzz",
    invalid_request=FaultCode.INVALID_REQUEST,
    busy=FaultCode.BUSY,
    internal=FaultCode.INTERNAL,
    unauthorized=frozenset({FaultCode.AUTH_FAILED, FaultCode.FORBIDDEN}),
    not_found=frozenset({FaultCode.NOT_FOUND}),
)
