"""``CaseStatusSink`` over 一网通办's signed JSON REST status interface (``openapi.yaml``)."""

from __future__ import annotations

import httpx

from adapters.envelope import encode, send_signed
from adapters.resilience import CircuitBreaker, httpx_errors, retry_transient
from adapters.signing import Signer
from adapters.ywtb import mapping
from adapters.ywtb.errors import ENVELOPE, PLATFORM
from schemas.cases import CaseStatusUpdate
from schemas.errors import FieldError, InvalidInput


class CaseStatusClient:
    """Pushes case status (办件状态推送); every request signed, timed out and retried.

    Pushes are idempotent on the platform side by ``SJID`` (the update's
    ``event_id``), so a retry after a lost answer cannot apply a stage twice.
    ``http`` is owned by the caller; the client only adds the base URL,
    signing headers and a timeout per call. ``breaker`` (default: one of its
    own) guards every attempt.
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
        self._url = base_url.rstrip("/") + mapping.STATUS_PATH
        self._signer = Signer(app_id, app_secret, algorithm)
        self._timeout = httpx.Timeout(timeout_s)
        self._attempts = attempts
        self.breaker = breaker or CircuitBreaker(PLATFORM)

    async def push_status(self, update: CaseStatusUpdate) -> None:
        """Push one stage change; a repeat of an accepted push is success.

        Raises ``InvalidInput`` (before sending), ``Unauthorized``, ``Conflict``
        (a later state is already on the platform), ``PlatformRejected`` or,
        after the last attempt (at once while the breaker is open),
        ``PlatformUnavailable``.
        """
        try:
            content = encode(mapping.status_body(update))
        except FieldError as exc:
            raise InvalidInput(exc.field, exc.reason, platform=PLATFORM) from exc
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
                ENVELOPE.read(response)
                return
        raise AssertionError("retry_transient neither returned nor raised")  # pragma: no cover
