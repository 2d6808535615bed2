"""``CaseStatusSink`` over 一网通办's signed JSON REST status interface (``openapi.yaml``)."""

from __future__ import annotations

from adapters.envelope import SignedRestClient, encode
from adapters.ywtb import mapping
from adapters.ywtb.errors import ENVELOPE, PLATFORM
from schemas.cases import CaseStatusUpdate
from schemas.errors import FieldError, InvalidInput


class CaseStatusClient(SignedRestClient):
    """Pushes case status (办件状态推送); every request signed, timed out and retried
    (``SignedRestClient``).

    Pushes are idempotent on the platform side by ``SJID`` (the update's
    ``event_id``), so a retry after a lost answer cannot apply a stage twice.
    """

    platform = PLATFORM

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
        await self.call("POST", mapping.STATUS_PATH, ENVELOPE.read, content=content)
