"""``LicenceRegistry`` over the 电子证照库 SOAP service (zeep, async, over httpx)."""

from __future__ import annotations

import uuid

import httpx
from zeep.helpers import serialize_object

from adapters.licence.errors import PLATFORM, SOAP_PLATFORM
from adapters.licence.mapping import (
    BINDING,
    SERVICE_PATH,
    WSDL_PATH,
    licence_from_response,
    licence_request,
)
from adapters.resilience import CircuitBreaker, retry_transient
from adapters.soap import service_proxy, zeep_errors
from schemas.evidence import BusinessLicence

REQUESTER = "ywtb-connector"
PURPOSE = "一证办电"


class LicenceClient:
    """Business licences by 统一社会信用代码, from the electronic licence library.

    The WSDL is read from the repository, never fetched; calls go to
    ``<base_url>/ws/licence`` over the caller's ``httpx.AsyncClient``, signed
    with a WS-Security UsernameToken (PasswordDigest). Each call names the
    requesting system, the purpose and a request serial for the platform's
    audit trail. ``breaker`` (default: one of its own) guards every attempt.
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
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._attempts = attempts
        self._requester = requester
        self._purpose = purpose
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

    async def fetch_licence(self, uscc: str, *, request_id: str | None = None) -> BusinessLicence:
        """The licence of ``uscc``; ``request_id`` (QQLSH) defaults to a new UUID.

        Raises ``NotFound``, ``Unauthorized``, ``PlatformRejected``, or
        ``PlatformUnavailable`` once ``attempts`` tries have failed transiently
        (or at once while the breaker is open).
        """
        request = licence_request(
            uscc,
            system=self._requester,
            purpose=self._purpose,
            serial=request_id or uuid.uuid4().hex,
        )
        async for attempt in retry_transient(self._attempts):
            with attempt, self.breaker.guard(), zeep_errors(PLATFORM, SOAP_PLATFORM.classify_fault):
                reply = await self._service.QueryLicence(**request)
                fields = serialize_object(reply, dict)  # type: ignore[no-untyped-call]
                return licence_from_response(fields, uscc=uscc)
        raise AssertionError("unreachable: retry_transient re-raises the last error")
