"""``MarketingSystem`` over the marketing system's notice service (SOAP via zeep, async, httpx)."""

from __future__ import annotations

import httpx
from zeep.helpers import serialize_object

from adapters.marketing.errors import PLATFORM, SOAP_PLATFORM, rejected
from adapters.marketing.mapping import (
    BINDING,
    REJECTED,
    SERVICE_PATH,
    WSDL_PATH,
    notice_request,
    receipt_from_response,
)
from adapters.resilience import CircuitBreaker, retry_transient
from adapters.soap import service_proxy, zeep_errors
from schemas.cases import MarketingNotice
from schemas.errors import FieldError, InvalidInput


class MarketingClient:
    """Delivers notices to the marketing system (营销系统), one ReceiveNotice call each.

    The WSDL is read from the repository, never fetched; calls go to
    ``<base_url>/ws/notice`` over the caller's ``httpx.AsyncClient``, signed
    with a WS-Security UsernameToken (PasswordDigest). The system deduplicates
    on TZID (the notice's ``event_id``), so retries are safe. ``breaker``
    (default: one of its own) guards every attempt.
    """

    def __init__(
        self,
        *,
        base_url: str,
        username: str,
        password: str,
        http: httpx.AsyncClient,
        timeout_s: float = 5.0,
        attempts: int = 3,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._attempts = attempts
        self.breaker = breaker or CircuitBreaker(PLATFORM)
        self._service = service_proxy(
            wsdl_path=WSDL_PATH,
            binding=BINDING,
            address=base_url.rstrip("/") + SERVICE_PATH,
            username=username,
            password=password,
            http=http,
            timeout_s=timeout_s,
            platform=PLATFORM,
        )

    async def notify(self, notice: MarketingNotice) -> None:
        """Deliver one notice; a duplicate the system already holds is success.

        Raises ``InvalidInput`` (before sending), ``Unauthorized``,
        ``PlatformRejected`` (拒收 or a malformed request), or
        ``PlatformUnavailable`` once ``attempts`` tries have failed transiently
        (or at once while the breaker is open).
        """
        try:
            request = notice_request(notice)
        except FieldError as exc:
            raise InvalidInput(exc.field, exc.reason, platform=PLATFORM) from exc
        async for attempt in retry_transient(self._attempts):
            with attempt, self.breaker.guard(), zeep_errors(PLATFORM, SOAP_PLATFORM.classify_fault):
                reply = await self._service.ReceiveNotice(**request)
                fields = serialize_object(reply, dict)  # type: ignore[no-untyped-call]
                receipt = receipt_from_response(fields)
                if receipt.code == REJECTED:
                    raise rejected(receipt.message)
                return
        raise AssertionError("unreachable: retry_transient re-raises the last error")
