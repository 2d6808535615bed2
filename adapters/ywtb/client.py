"""``CaseStatusSink`` over 一网通办's signed JSON REST status interface (``openapi.yaml``)."""

from __future__ import annotations

import httpx

from adapters.envelope import encode, send_signed
from adapters.resilience import CircuitBreaker, httpx_errors, retry_transient
from adapters.signing import Signer
from adapters.ywtb import mapping
from adapters.ywtb.errors import ENVELOPE, PLATFORM
from schemas.cases import CaseStatusUpdate
from schemas.errors import Conflict, ConnectorError, InvalidInput, PushOutOfOrder


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
        http: httpx.AsyncClient,
        *,
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

        Raises ``InvalidInput`` (before sending), ``Unauthorized``,
        ``PushOutOfOrder`` (the case misses earlier stages; ``last_seq`` is its
        last accepted one), ``PlatformRejected`` or, after the last attempt (at
        once while the breaker is open), ``PlatformUnavailable``.
        """
        try:
            content = encode(mapping.status_body(update))
        except ValueError as exc:
            field, _, reason = str(exc).partition(": ")
            raise InvalidInput(field, reason, platform=PLATFORM) from exc
        async for attempt in retry_transient(self._attempts):
            with attempt, self.breaker.guard("push_status"), httpx_errors(PLATFORM):
                response = await send_signed(
                    self._http,
                    self._signer,
                    "POST",
                    self._url,
                    content=content,
                    http_timeout=self._timeout,
                )
                try:
                    ENVELOPE.read(response)
                except Conflict as exc:
                    raise _out_of_order(exc, response) from exc
                return
        raise AssertionError("retry_transient neither returned nor raised")  # pragma: no cover


def _out_of_order(error: Conflict, response: httpx.Response) -> ConnectorError:
    """A 4090 as ``PushOutOfOrder`` carrying the case's last accepted XH; other conflicts as is."""
    if error.context.get("platform_code") != mapping.OUT_OF_ORDER:
        return error
    try:
        last_seq = mapping.last_seq_of(response.json().get("data"))
    except (ValueError, AttributeError) as exc:
        return ENVELOPE.unreadable_answer(f"4090 {exc}", response.status_code)
    return PushOutOfOrder(
        PLATFORM,
        error.detail.removeprefix(f"{PLATFORM}: "),
        last_seq=last_seq,
        platform_code=mapping.OUT_OF_ORDER,
    )
