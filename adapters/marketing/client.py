"""``MarketingSystem`` over the marketing system's notice service (SOAP via zeep, async, httpx)."""

from __future__ import annotations

from adapters.marketing.errors import PLATFORM, SOAP_PLATFORM, rejected
from adapters.marketing.mapping import (
    BINDING,
    OPERATION,
    REJECTED,
    SERVICE_PATH,
    WSDL_PATH,
    notice_request,
    receipt_from_response,
)
from adapters.soap import SoapClient
from schemas.cases import MarketingNotice
from schemas.errors import FieldError, InvalidInput


class MarketingClient(SoapClient):
    """Delivers notices to the marketing system (营销系统), one ReceiveNotice call each
    (``SoapClient``, at ``<base_url>/ws/notice``). The system deduplicates on TZID
    (the notice's ``event_id``), so retries are safe.
    """

    soap_platform = SOAP_PLATFORM
    wsdl_path = WSDL_PATH
    binding = BINDING
    service_path = SERVICE_PATH

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
        await self.call(OPERATION, _accepted, operation="notify", **request)


def _accepted(fields: object) -> None:
    """A receipt that is not 拒收 (a rejection is permanent: never retried)."""
    receipt = receipt_from_response(fields)
    if receipt.code == REJECTED:
        raise rejected(receipt.message)
