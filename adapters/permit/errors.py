"""The platform's failures in the connector's error tree.

=========================  =======================================
envelope code              raised as
=========================  =======================================
4010, 4011, 4012           ``Unauthorized`` (not retried)
4090                       ``Conflict`` (request id reused for other content)
5000, any 5xxx, HTTP 5xx   ``PlatformUnavailable`` (transient)
anything else (4000, ...)  ``PlatformRejected`` with the code
=========================  =======================================

Timeouts and transport failures become ``PlatformUnavailable`` through
``adapters.resilience.httpx_errors``.
"""

from __future__ import annotations

from adapters.permit import mapping
from schemas.errors import (
    Conflict,
    ConnectorError,
    PlatformRejected,
    PlatformUnavailable,
    Unauthorized,
)

PLATFORM = "permit"

_UNAUTHORIZED: dict[str, str] = {
    mapping.BAD_SIGNATURE: "bad_signature",
    mapping.STALE_TIMESTAMP: "stale_timestamp",
    mapping.REPLAYED_NONCE: "replayed_nonce",
}
"""Envelope code → ``Unauthorized.code`` (the same words ``adapters.signing`` uses)."""


def envelope_error(code: str, message: str) -> ConnectorError:
    """The error for an envelope whose code is not success."""
    context = {"platform": PLATFORM, "platform_code": code}
    if code in _UNAUTHORIZED:
        return Unauthorized(f"{PLATFORM}: {message}", code=_UNAUTHORIZED[code], **context)
    if code == mapping.DUPLICATE_REQUEST:
        return Conflict(f"{PLATFORM}: {message}", **context)
    if code.startswith("5"):
        return PlatformUnavailable(PLATFORM, f"{message} (code {code})", platform_code=code)
    return PlatformRejected(PLATFORM, message, platform_code=code)


def unreadable_answer(detail: str, http_status: int) -> PlatformRejected:
    """An answer that is not the documented envelope: retrying will not make it readable."""
    return PlatformRejected(
        PLATFORM,
        f"unreadable answer (HTTP {http_status}): {detail}",
        platform_code="invalid_answer",
    )
