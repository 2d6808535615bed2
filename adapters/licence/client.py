"""``LicenceRegistry`` over the 电子证照库 SOAP service (zeep, async, over httpx)."""

from __future__ import annotations

import uuid

import httpx
from zeep import AsyncClient, Settings
from zeep.helpers import serialize_object
from zeep.proxy import AsyncServiceProxy
from zeep.transports import AsyncTransport
from zeep.wsse.username import UsernameToken

from adapters.licence.errors import PLATFORM, soap_errors
from adapters.licence.mapping import (
    BINDING,
    SERVICE_PATH,
    WSDL_PATH,
    licence_from_response,
    licence_request,
)
from adapters.resilience import raise_for_server_error, retry_transient
from schemas.evidence import BusinessLicence

REQUESTER = "ywtb-connector"
PURPOSE = "一证办电"


class LicenceClient:
    """Business licences by 统一社会信用代码, from the electronic licence library.

    The WSDL is read from the repository, never fetched; calls go to
    ``<base_url>/ws/licence`` over the caller's ``httpx.AsyncClient``, signed
    with a WS-Security UsernameToken (PasswordDigest). Each call names the
    requesting system, the purpose and a request serial for the platform's
    audit trail.
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
        requester: str = REQUESTER,
        purpose: str = PURPOSE,
    ) -> None:
        self._attempts = attempts
        self._requester = requester
        self._purpose = purpose
        # zeep ships py.typed but leaves most signatures untyped.
        token = UsernameToken(username, password, use_digest=True, zulu_timestamp=True)  # type: ignore[no-untyped-call]
        zeep_client = AsyncClient(  # type: ignore[no-untyped-call]
            str(WSDL_PATH),
            wsse=token,
            transport=_HttpxTransport(http, timeout_s),
            settings=Settings(forbid_dtd=True, forbid_entities=True, forbid_external=True),
        )
        # AsyncClient.create_service would return a synchronous proxy.
        self._service = AsyncServiceProxy(  # type: ignore[no-untyped-call]
            zeep_client,
            zeep_client.wsdl.bindings[BINDING],
            address=base_url.rstrip("/") + SERVICE_PATH,
        )

    async def fetch_licence(self, uscc: str, *, request_id: str | None = None) -> BusinessLicence:
        """The licence of ``uscc``; ``request_id`` (QQLSH) defaults to a new UUID.

        Raises ``NotFound``, ``Unauthorized``, ``PlatformRejected``, or
        ``PlatformUnavailable`` once ``attempts`` tries have failed transiently.
        """
        request = licence_request(
            uscc,
            system=self._requester,
            purpose=self._purpose,
            serial=request_id or uuid.uuid4().hex,
        )
        async for attempt in retry_transient(self._attempts):
            with attempt, soap_errors():
                reply = await self._service.QueryLicence(**request)
                fields = serialize_object(reply, dict)  # type: ignore[no-untyped-call]
                return licence_from_response(fields, uscc=uscc)
        raise AssertionError("unreachable: retry_transient re-raises the last error")


class _HttpxTransport(AsyncTransport):
    """zeep's async transport over a caller-owned ``httpx.AsyncClient``.

    zeep's own constructor would create a second (sync) client for loading
    documents and overwrite the passed client's default headers; this one
    does neither, puts a timeout on every call, and refuses to fetch any
    document, since the WSDL is a self-contained file in the repository.
    """

    def __init__(self, http: httpx.AsyncClient, timeout_s: float) -> None:
        # AsyncTransport.__init__ is skipped on purpose (see above); these are
        # the attributes the zeep Transport methods read.
        self.client = http
        self.cache = None
        self._close_session = False
        self._timeout = httpx.Timeout(timeout_s)

    def _load_remote_data(self, url: str) -> bytes:
        raise RuntimeError(f"refusing to fetch {url}: the licence WSDL is read from the repository")

    async def post(self, address: str, message: bytes, headers: dict[str, str]) -> httpx.Response:
        response = await self.client.post(
            address, content=message, headers=headers, timeout=self._timeout
        )
        # SOAP 1.1 carries faults in HTTP 500, which zeep parses; any other
        # 5xx (or 429) comes from the platform's front end and is transient.
        if response.status_code != 500:
            raise_for_server_error(PLATFORM, response)
        return response

    async def aclose(self) -> None:
        """The httpx client belongs to the caller, who closes it."""
