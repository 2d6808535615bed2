"""``LicenceRegistry`` over the 电子证照库 SOAP service (zeep, async, over httpx)."""

from __future__ import annotations

import uuid
from functools import partial

from adapters.licence.errors import SOAP_PLATFORM
from adapters.licence.mapping import (
    BINDING,
    SERVICE_PATH,
    WSDL_PATH,
    licence_from_response,
    licence_request,
)
from adapters.soap import SoapClient
from schemas.evidence import BusinessLicence

REQUESTER = "ywtb-connector"
PURPOSE = "一证办电"


class LicenceClient(SoapClient):
    """Business licences by 统一社会信用代码, from the electronic licence library
    (``SoapClient``, at ``<base_url>/ws/licence``). Each call names the requesting
    system, the purpose and a request serial for the platform's audit trail.
    """

    soap_platform = SOAP_PLATFORM
    wsdl_path = WSDL_PATH
    binding = BINDING
    service_path = SERVICE_PATH
    requester = REQUESTER
    purpose = PURPOSE

    async def fetch_licence(self, uscc: str, *, request_id: str | None = None) -> BusinessLicence:
        """The licence of ``uscc``; ``request_id`` (QQLSH) defaults to a new UUID.

        Raises ``NotFound``, ``Unauthorized``, ``PlatformRejected``, or
        ``PlatformUnavailable`` once ``attempts`` tries have failed transiently
        (or at once while the breaker is open).
        """
        request = licence_request(
            uscc,
            system=self.requester,
            purpose=self.purpose,
            serial=request_id or uuid.uuid4().hex,
        )
        return await self.call(
            "QueryLicence",
            partial(licence_from_response, uscc=uscc),
            operation="fetch_licence",
            **request,
        )
