"""``PermitAuthority`` over the platform's signed JSON REST interface (``openapi.yaml``)."""

from __future__ import annotations

import httpx

from adapters.envelope import encode, send_signed
from adapters.permit import mapping
from adapters.permit.errors import ENVELOPE, PLATFORM
from adapters.resilience import CircuitBreaker, httpx_errors, retry_transient
from adapters.signing import Signer
from schemas.permits import PermitFiling, PermitRequest


class PermitClient:
    """Files 占掘路 permit applications; every request signed, timed out and retried.

    ``http`` is owned by the caller (connection pool, TLS settings); the client
    only adds the base URL, signing headers and a timeout per call. The decision
    arrives later as a callback (``mapping.decision_from_callback``). ``breaker``
    (default: one of its own) guards every attempt.
    """

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        base_url: str,
        app_id: str,
        app_secret: str,
        algorithm: str = "hmac-sha256",
        timeout_s: float = 5.0,
        attempts: int = 3,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._http = http
        self._url = f"{base_url.rstrip('/')}/api/v1/permit-applications"
        self._signer = Signer(app_id, app_secret, algorithm)
        self._timeout = httpx.Timeout(timeout_s)
        self._attempts = attempts
        self.breaker = breaker or CircuitBreaker(PLATFORM)

    async def file_permit(self, request: PermitRequest) -> PermitFiling:
        """File one application (operation FilePermit) and return its 受理编号.

        Idempotent: the same works of the same application carry the same
        request id, so a retry or a repeat gets the first filing back. Raises
        ``Unauthorized``, ``Conflict``, ``PlatformRejected`` or, after the last
        attempt (at once while the breaker is open), ``PlatformUnavailable``.
        """
        content = encode(mapping.body_from_request(request))
        async for attempt in retry_transient(self._attempts):
            with attempt, self.breaker.guard(), httpx_errors(PLATFORM):
                response = await send_signed(
                    self._http,
                    self._signer,
                    "POST",
                    self._url,
                    content=content,
                    http_timeout=self._timeout,
                )
                return ENVELOPE.read_data(response, mapping.filing_from_data)
        raise AssertionError("retry_transient neither returned nor raised")  # pragma: no cover
