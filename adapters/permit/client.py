"""``PermitAuthority`` over the platform's signed JSON REST interface (``openapi.yaml``)."""

from __future__ import annotations

from functools import partial

from adapters.envelope import SignedRestClient, encode
from adapters.permit import mapping
from adapters.permit.errors import ENVELOPE, PLATFORM
from schemas.permits import PermitFiling, PermitRequest


class PermitClient(SignedRestClient):
    """Files 占掘路 permit applications; every request signed, timed out and retried
    (``SignedRestClient``). The decision arrives later as a callback
    (``mapping.decision_from_callback``).
    """

    platform = PLATFORM

    async def file_permit(self, request: PermitRequest) -> PermitFiling:
        """File one application (operation FilePermit) and return its 受理编号.

        Idempotent: the same works of the same application carry the same
        request id, so a retry or a repeat gets the first filing back. Raises
        ``Unauthorized``, ``Conflict``, ``PlatformRejected`` or, after the last
        attempt (at once while the breaker is open), ``PlatformUnavailable``.
        """
        return await self.call(
            "POST",
            mapping.APPLICATIONS_PATH,
            partial(ENVELOPE.read_data, parse=mapping.filing_from_data),
            content=encode(mapping.body_from_request(request)),
            operation="file_permit",
        )
