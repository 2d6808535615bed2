"""``CaseStatusSink`` over 一网通办's signed JSON REST status interface (``openapi.yaml``)."""

from __future__ import annotations

import httpx

from adapters.envelope import SignedRestClient, encode
from adapters.ywtb import mapping
from adapters.ywtb.errors import ENVELOPE, PLATFORM
from schemas.cases import CaseStatusUpdate
from schemas.errors import Conflict, ConnectorError, FieldError, InvalidInput, PushOutOfOrder


class CaseStatusClient(SignedRestClient):
    """Pushes case status (办件状态推送); every request signed, timed out and retried
    (``SignedRestClient``).

    Pushes are idempotent on the platform side by ``SJID`` (the update's
    ``event_id``), so a retry after a lost answer cannot apply a stage twice.
    """

    platform = PLATFORM

    async def push_status(self, update: CaseStatusUpdate) -> None:
        """Push one stage change; a repeat of an accepted push is success.

        Raises ``InvalidInput`` (before sending), ``Unauthorized``,
        ``PushOutOfOrder`` (the case misses earlier stages; ``last_seq`` is its
        last accepted one), ``PlatformRejected`` or, after the last attempt (at
        once while the breaker is open), ``PlatformUnavailable``.
        """
        try:
            content = encode(mapping.status_body(update))
        except FieldError as exc:
            raise InvalidInput(exc.field, exc.reason, platform=PLATFORM) from exc
        await self.call(
            "POST", mapping.STATUS_PATH, _read_push, content=content, operation="push_status"
        )


def _read_push(response: httpx.Response) -> None:
    """The platform's answer to a push; "out of order" (4090) as ``PushOutOfOrder``."""
    try:
        ENVELOPE.read(response)
    except Conflict as exc:
        raise _out_of_order(exc, response) from exc


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
