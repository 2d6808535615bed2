"""``MarketingSystem`` over the marketing system's notice service (SOAP via zeep, async, httpx)."""

from __future__ import annotations

import httpx
from zeep import AsyncClient, Settings
from zeep.helpers import serialize_object
from zeep.proxy import AsyncServiceProxy
from zeep.transports import AsyncTransport
from zeep.wsse.username import UsernameToken

from adapters.marketing.errors import PLATFORM, rejected, soap_errors
from adapters.marketing.mapping import (
    BINDING,
    REJECTED,
    SERVICE_PATH,
    WSDL_PATH,
    notice_request,
    receipt_from_response,
)
from adapters.resilience import raise_for_server_error, retry_transient
from schemas.cases import MarketingNotice
from schemas.errors import InvalidInput


class MarketingClient:
    """Delivers notices to the marketing system (营销系统), one ReceiveNotice call each.

    The WSDL is read from the repository, never fetched; calls go to
    ``<base_url>/ws/notice`` over the caller's ``httpx.AsyncClient``, signed
    with a WS-Security UsernameToken (PasswordDigest). The system deduplicates
    on TZID (the notice's ``event_id``), so retries are safe.
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
    ) -> None:
        self._attempts = attempts
        # zeep ships py.typed but leaves most signatures untyped.
        token = UsernameToken(username, password, use_digest=True, zulu_timestamp=True)  # type: ignore[no-untyped-call]
        zeep_client = AsyncClient(  # type: ignore[no-untyped-call]
            str(WSDL_PATH),
            wsse=token,
            transport=HttpxTransport(http, timeout_s, platform=PLATFORM),
            settings=Settings(forbid_dtd=True, forbid_entities=True, forbid_external=True),
        )
        # AsyncClient.create_service would return a synchronous proxy.
        self._service = AsyncServiceProxy(  # type: ignore[no-untyped-call]
            zeep_client,
            zeep_client.wsdl.bindings[BINDING],
            address=base_url.rstrip("/") + SERVICE_PATH,
        )

    async def notify(self, notice: MarketingNotice) -> None:
        """Deliver one notice; a duplicate the system already holds is success.

        Raises ``InvalidInput`` (before sending), ``Unauthorized``,
        ``PlatformRejected`` (拒收 or a malformed request), or
        ``PlatformUnavailable`` once ``attempts`` tries have failed transiently.
        """
        try:
            request = notice_request(notice)
        except ValueError as exc:
            field, _, reason = str(exc).partition(": ")
            raise InvalidInput(field, reason, platform=PLATFORM) from exc
        async for attempt in retry_transient(self._attempts):
            with attempt, soap_errors():
                reply = await self._service.ReceiveNotice(**request)
                fields = serialize_object(reply, dict)  # type: ignore[no-untyped-call]
                receipt = receipt_from_response(fields)
                if receipt.code == REJECTED:
                    raise rejected(receipt.message)
                return
        raise AssertionError("unreachable: retry_transient re-raises the last error")


class HttpxTransport(AsyncTransport):
    """zeep's async transport over a caller-owned ``httpx.AsyncClient``.

    The same approach as ``adapters.licence.client``: zeep 4.3.3's own
    constructor would create a second (sync) client for loading documents and
    overwrite the passed client's default headers; this one does neither,
    puts a timeout on every call, refuses to fetch any document (WSDLs are
    files in the repository) and names ``platform`` in its errors.
    """

    def __init__(self, http: httpx.AsyncClient, timeout_s: float, *, platform: str) -> None:
        # AsyncTransport.__init__ is skipped on purpose (see above); these are
        # the attributes the zeep Transport methods read.
        self.client = http
        self.cache = None
        self._close_session = False
        self._timeout = httpx.Timeout(timeout_s)
        self._platform = platform

    def _load_remote_data(self, url: str) -> bytes:
        raise RuntimeError(f"refusing to fetch {url}: WSDLs are read from the repository")

    async def post(self, address: str, message: bytes, headers: dict[str, str]) -> httpx.Response:
        response = await self.client.post(
            address, content=message, headers=headers, timeout=self._timeout
        )
        # SOAP 1.1 carries faults in HTTP 500, which zeep parses; any other
        # 5xx (or 429) comes from the front end and is transient.
        if response.status_code != 500:
            raise_for_server_error(self._platform, response)
        return response

    async def aclose(self) -> None:
        """The httpx client belongs to the caller, who closes it."""
