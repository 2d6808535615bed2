"""一网通办 as a real HTTP app: takes status pushes and files cases back to us.

It checks signatures as the platform does (algorithm, timestamp window, nonce
replay), records every accepted push in order, and takes the stages of a case
strictly in sequence: ``XH`` n only after n-1 (else 4090, stating the case's
last accepted ``XH`` in ``data.ZHXH``); a repeated ``SJID`` or an ``XH``
already accepted is success without applying it twice. It serves its
interface file at ``GET /openapi.yaml``. Admin endpoints (besides ``adapters.simulation``'s):

- ``GET /_admin/pushes``: ``{"pushes": [...]}``, the accepted push bodies in order.
- ``GET|PUT|DELETE /_admin/reject``: the case numbers answered 4004 (办件不存在);
  ``PUT`` takes a JSON list and replaces the set.
- ``POST /_admin/file-case``: a customer files a case (``FileCase``); the
  platform POSTs the signed case callback to ``callback_url``, retrying until
  a 2xx or ``max_attempts``, and answers with the delivery record, including
  the ``application_id`` the connector's acknowledgement named (or None).
- ``GET /_admin/deliveries``: ``{"deliveries": [...]}``, every file-case so far.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response
from pydantic import Field

from adapters import envelope
from adapters.signing import DEFAULT_WINDOW_S, Signer
from adapters.simulation import (
    ADMIN_PREFIX,
    DeliveryAttempt,
    SimulatorControl,
    deliver_signed,
    install_admin_set,
)
from adapters.ywtb import mapping
from schemas.cases import InboundCase
from schemas.chinatime import parse_platform_time
from schemas.errors import FieldError

OPENAPI_FILE = Path(__file__).with_name("openapi.yaml")
OPERATION = "PushCaseStatus"
MAX_CALLBACK_DELAY_S = 2.0


class FileCase(InboundCase):
    """Admin request: the case a customer files, and where the platform calls the connector."""

    callback_url: str = Field(description="the connector's case callback endpoint")
    callback_app_id: str = Field(description="X-App-Id the connector issued to the platform")
    callback_secret: str = Field(description="the key the platform signs with (shared secret)")
    max_attempts: int = Field(5, ge=1, le=20, description="deliveries tried before giving up")


def _answer(code: str, message: str, data: dict[str, Any] | None = None) -> Response:
    return envelope.answer(code, message, data, status=mapping.HTTP_STATUS[code])


def create_app(
    *,
    app_id: str,
    app_secret: str,
    algorithm: str = "hmac-sha256",
    control: SimulatorControl | None = None,
    window_s: float = DEFAULT_WINDOW_S,
    callback_retry_s: float = 0.2,
    callback_timeout_s: float = 5.0,
) -> FastAPI:
    """A platform that knows one app (``app_id``/``app_secret``) signing with ``algorithm``.

    ``app_secret`` is the shared secret, or for ``sm2-sm3`` the connector's
    public key. The same algorithm signs the case callbacks, with the
    ``callback_secret`` of each file-case request (for ``sm2-sm3``: the
    platform's private key). ``callback_retry_s`` is the first back-off
    between deliveries (doubling, at most 2 s).
    """
    signatures = envelope.SignatureCheck(
        app_id=app_id, secret=app_secret, algorithm=algorithm, window_s=window_s
    )
    control = control or SimulatorControl()
    pushes: list[dict[str, Any]] = []
    deliveries: list[dict[str, Any]] = []
    rejected: set[str] = set()
    applied_events: set[str] = set()
    last_seq: dict[str, int] = {}

    app = envelope.simulator_app(
        title="一网通办 (simulator)", openapi_file=OPENAPI_FILE, control=control
    )
    app.state.pushes = pushes
    app.state.deliveries = deliveries
    app.state.rejected = rejected

    @app.post(mapping.STATUS_PATH)
    async def push_status(request: Request) -> Response:
        control.record(OPERATION)
        _, raw = await signatures.verify(request)
        try:
            body = _checked_push(json.loads(raw))
        except ValueError as exc:  # json.JSONDecodeError is one
            return _answer(envelope.BAD_REQUEST, f"请求参数错误: {exc}")
        case_no, event_id, seq = body["BJBH"], body["SJID"], body["XH"]
        if case_no in rejected:
            return _answer(mapping.UNKNOWN_CASE, f"办件不存在: {case_no}")
        last = last_seq.get(case_no, 0)
        if event_id in applied_events or seq <= last:
            return _answer(envelope.OK, mapping.DUPLICATE_MESSAGE)
        if seq != last + 1:
            return _answer(
                mapping.OUT_OF_ORDER,
                f"序号不连续: 收到序号 {seq}, 已接收的最后序号为 {last}",
                {mapping.LAST_SEQ: last},
            )
        applied_events.add(event_id)
        last_seq[case_no] = seq
        pushes.append(body)
        return _answer(envelope.OK, mapping.OK_MESSAGE)

    @app.get(f"{ADMIN_PREFIX}/pushes", include_in_schema=False)
    async def get_pushes() -> dict[str, Any]:
        return {"pushes": pushes}

    install_admin_set(app, "reject", rejected)

    @app.post(f"{ADMIN_PREFIX}/file-case", include_in_schema=False)
    async def file_case(filed: FileCase) -> dict[str, Any]:
        delivery = await _deliver(filed, algorithm, callback_retry_s, callback_timeout_s)
        deliveries.append(delivery)
        return delivery

    @app.get(f"{ADMIN_PREFIX}/deliveries", include_in_schema=False)
    async def get_deliveries() -> dict[str, Any]:
        return {"deliveries": deliveries}

    return app


def _checked_push(body: object) -> dict[str, Any]:
    """The push body if the platform would accept its fields; ``ValueError`` naming one if not."""
    if not isinstance(body, dict):
        raise FieldError("body", "not a JSON object")
    for name in ("SJID", "BJBH", "BLR"):
        if not isinstance(body.get(name), str) or not body[name].strip():
            raise FieldError(name, "missing or not a string")
    seq = body.get("XH")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise FieldError("XH", f"not a positive integer: {seq!r}")
    if "SXBM" in body and not isinstance(body["SXBM"], str):
        raise FieldError("SXBM", "not a string")
    stage_code = body.get("ZTDM")
    mapping.stage_from_codes(stage_code, body.get("HJMC"))
    parse_platform_time(body.get("BLSJ"), "BLSJ")
    if stage_code in mapping.REASON_REQUIRED and not body.get("YY"):
        raise FieldError("YY", f"required with ZTDM {stage_code}")
    if stage_code == mapping.COMPLETED and body.get("BJJGDM") not in mapping.RESULT_CODES:
        raise FieldError("BJJGDM", f"unknown 办结结果代码 {body.get('BJJGDM')!r}")
    return body


async def _deliver(
    filed: FileCase, algorithm: str, retry_s: float, timeout_s: float
) -> dict[str, Any]:
    """POST the signed case callback until a 2xx answer or the last attempt; the record of it."""
    case = InboundCase.model_validate(filed.model_dump(include=set(InboundCase.model_fields)))
    body = mapping.callback_body(case)
    attempts: list[dict[str, Any]] = []
    acknowledged: dict[str, Any] = {}

    def record(attempt: DeliveryAttempt) -> None:
        outcome = {"status": attempt.status} if attempt.error is None else {"error": attempt.error}
        attempts.append({"attempt": attempt.attempt, **outcome})
        if attempt.answer is not None:
            acknowledged.update(attempt.answer)

    async with httpx.AsyncClient(timeout=timeout_s) as http:
        delivered = await deliver_signed(
            http,
            filed.callback_url,
            envelope.encode(body),
            signer=Signer(filed.callback_app_id, filed.callback_secret, algorithm),
            attempts=filed.max_attempts,
            backoff_s=retry_s,
            max_backoff_s=MAX_CALLBACK_DELAY_S,
            on_attempt=record,
        )
    return {
        "BJBH": case.case_no,
        "callback_url": filed.callback_url,
        "body": body,
        "delivered": delivered,
        "attempts": attempts,
        "application_id": acknowledged.get("application_id") if delivered else None,
    }
