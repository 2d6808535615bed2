"""The road authority's permit platform as a real HTTP app.

It checks signatures as the platform does (algorithm, timestamp window, nonce
replay), keeps one filing per application and request id, and answers the
envelope. After ``decision_delay_s`` it decides each filing by a policy and
posts the signed decision to the registered callback URL, retrying with
back-off until it gets a 2xx. Besides fault injection (``adapters.simulation``)
it has admin endpoints for tests and drills:

- ``GET /_admin/callbacks``: every callback attempt, ``{"SLBH", "status"}``
  (``status`` null when there was no answer);
- ``GET|PUT /_admin/policy``: ``{"policy": "approve" | "refuse-long" |
  "refuse-all", "decision_delay_s": 2.0}``.

Serve it with its lifespan on: the lifespan owns the callback HTTP client and
cancels pending decisions and callbacks on shutdown.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

import httpx
from fastapi import FastAPI, Request, Response
from pydantic import BaseModel, Field
from stdnum.cn import uscc

from adapters import envelope
from adapters.permit import mapping
from adapters.signing import DEFAULT_WINDOW_S, Signer
from adapters.simulation import ADMIN_PREFIX, DeliveryAttempt, SimulatorControl, deliver_signed
from schemas.chinatime import CHINA_STANDARD_TIME
from schemas.errors import FieldError
from schemas.permits import PermitDecision, PermitFiling, PermitOutcome, PermitRequest

OPENAPI_FILE = Path(__file__).with_name("openapi.yaml")
log = logging.getLogger(__name__)

Policy = Callable[[dict[str, Any]], tuple[bool, str | None]]
"""A filing's body → (approve?, refusal reason)."""

MAX_EXCAVATION_LENGTH_M = 500.0
CALLBACK_TIMEOUT_S = 5.0
CALLBACK_MAX_BACKOFF_S = 60.0


def approve_all(body: dict[str, Any]) -> tuple[bool, str | None]:
    return True, None


def refuse_long(body: dict[str, Any]) -> tuple[bool, str | None]:
    """Refuse excavations longer than the section allows."""
    if mapping.request_from_body(body).excavation_length_m > MAX_EXCAVATION_LENGTH_M:
        return False, f"挖掘长度超过路段允许范围（不超过{MAX_EXCAVATION_LENGTH_M:g}米），请分段申请"
    return True, None


def refuse_all(body: dict[str, Any]) -> tuple[bool, str | None]:
    return False, "该路段施工计划冲突，不予许可"


POLICIES: dict[str, Policy] = {
    "approve": approve_all,
    "refuse-long": refuse_long,
    "refuse-all": refuse_all,
}


class PolicySettings(BaseModel):
    """How the simulated authority decides (``PUT /_admin/policy``)."""

    policy: Literal["approve", "refuse-long", "refuse-all"]
    decision_delay_s: float | None = Field(None, ge=0, description="unchanged when absent")


class CallbackAttempt(NamedTuple):
    filing_no: str  # SLBH
    status: int | None  # HTTP status of the answer; None when there was none


@dataclass
class _Filing:
    filing: PermitFiling
    body: dict[str, Any]
    decision: PermitDecision | None = None


class _Authority:
    """The platform's state: filings, how it decides, and its pending callbacks."""

    def __init__(
        self,
        *,
        callback_url: str | None,
        callback_signer: Signer,
        policy: Policy | str,
        decision_delay_s: float,
        callback_attempts: int,
        callback_backoff_s: float,
    ) -> None:
        self.callback_url = callback_url
        self.callback_signer = callback_signer
        self.policy_name, self.policy = (
            (policy, POLICIES[policy]) if isinstance(policy, str) else ("custom", policy)
        )
        self.decision_delay_s = decision_delay_s
        self.callback_attempts = callback_attempts
        self.callback_backoff_s = callback_backoff_s
        self.filings: dict[tuple[str, str, str], _Filing] = {}
        self.callbacks: list[CallbackAttempt] = []
        self.http: httpx.AsyncClient | None = None
        self._serial = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()

    def file(self, app_id: str, body: dict[str, Any]) -> _Filing | None:
        """The filing for this application and request id; None if the id came with other works."""
        key = (app_id, body[mapping.FIELDS["application_id"]], mapping.request_id(body))
        known = self.filings.get(key)
        if known is not None:
            return known if known.body == body else None
        now = datetime.now(CHINA_STANDARD_TIME).replace(microsecond=0)
        filing = _Filing(
            PermitFiling(filing_no=f"ZJL{now:%Y%m%d}{next(self._serial):06d}", filed_at=now), body
        )
        self.filings[key] = filing
        task = asyncio.create_task(self._decide_and_call_back(filing, self.decision_delay_s))
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return filing

    async def cancel_pending(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("deciding a filing failed", exc_info=task.exception())

    async def _decide_and_call_back(self, filing: _Filing, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        filing.decision = self._decide(filing)
        if self.callback_url is not None:
            application_id = filing.body[mapping.FIELDS["application_id"]]
            await self._deliver(mapping.callback_from_decision(filing.decision, application_id))

    def _decide(self, filing: _Filing) -> PermitDecision:
        approved, reason = self.policy(filing.body)
        filing_no, now = (
            filing.filing.filing_no,
            datetime.now(CHINA_STANDARD_TIME).replace(microsecond=0),
        )
        if not approved:
            return PermitDecision(
                filing_no=filing_no,
                outcome=PermitOutcome.REFUSED,
                reason=reason or "不予许可",
                decided_at=now,
            )
        request = mapping.request_from_body(filing.body)
        return PermitDecision(
            filing_no=filing_no,
            outcome=PermitOutcome.APPROVED,
            permit_no=f"沪路政掘〔{now.year}〕{filing_no[-6:]}号",
            valid_from=request.period_start,
            valid_to=request.period_end,
            decided_at=now,
        )

    async def _deliver(self, body: dict[str, str]) -> None:
        """Post the decision until a 2xx answers it, or the attempts run out."""
        assert self.http is not None and self.callback_url is not None, "lifespan not started"

        def record(attempt: DeliveryAttempt) -> None:
            self.callbacks.append(CallbackAttempt(body["SLBH"], attempt.status))

        delivered = await deliver_signed(
            self.http,
            self.callback_url,
            envelope.encode(body),
            signer=self.callback_signer,
            attempts=self.callback_attempts,
            backoff_s=self.callback_backoff_s,
            max_backoff_s=CALLBACK_MAX_BACKOFF_S,
            on_attempt=record,
        )
        if not delivered:
            log.warning(
                "decision %s not acknowledged after %d attempts",
                body["SLBH"],
                self.callback_attempts,
            )


def _check_credentials(request: PermitRequest) -> None:
    """The platform checks the 统一社会信用代码 check characters; ``ValueError`` names the field."""
    for name in ("builder_uscc", "contractor_uscc"):
        code = getattr(request, name)
        if code is not None and not uscc.is_valid(code):
            raise FieldError(mapping.FIELDS[name], "统一社会信用代码无效")


def _answer(code: str, message: str, data: dict[str, str] | None = None) -> Response:
    return envelope.answer(code, message, data, status=mapping.HTTP_STATUS[code])


def create_app(
    *,
    app_id: str,
    app_secret: str,
    callback_url: str | None,
    callback_app_id: str,
    callback_secret: str,
    algorithm: str = "hmac-sha256",
    decision_delay_s: float = 2.0,
    policy: Policy | str = "approve",
    control: SimulatorControl | None = None,
    window_s: float = DEFAULT_WINDOW_S,
    callback_attempts: int = 50,
    callback_backoff_s: float = 1.0,
) -> FastAPI:
    """A simulator that knows one filing app (``app_id``/``app_secret``) signing with ``algorithm``.

    Decisions go to ``callback_url`` (none: decided but not delivered), signed
    as ``callback_app_id`` with ``callback_secret`` and the same algorithm;
    each undelivered callback is retried with exponential back-off from
    ``callback_backoff_s``, ``callback_attempts`` times in all.
    """
    signatures = envelope.SignatureCheck(
        app_id=app_id, secret=app_secret, algorithm=algorithm, window_s=window_s
    )
    if isinstance(policy, str) and policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r} (known: {', '.join(POLICIES)})")
    control = control or SimulatorControl()
    authority = _Authority(
        callback_url=callback_url,
        callback_signer=Signer(callback_app_id, callback_secret, algorithm),
        policy=policy,
        decision_delay_s=decision_delay_s,
        callback_attempts=callback_attempts,
        callback_backoff_s=callback_backoff_s,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=CALLBACK_TIMEOUT_S) as http:
            authority.http = http
            try:
                yield
            finally:
                await authority.cancel_pending()
                authority.http = None

    app = envelope.simulator_app(
        title="占掘路行政审批平台 (simulator)",
        openapi_file=OPENAPI_FILE,
        control=control,
        lifespan=lifespan,
    )
    app.state.callbacks = authority.callbacks
    app.state.filings = authority.filings

    @app.post(mapping.APPLICATIONS_PATH)
    async def file_permit(request: Request) -> Response:
        control.record("FilePermit")
        signer, content = await signatures.verify(request)
        try:
            body = json.loads(content)
            if not isinstance(body, dict):
                raise FieldError("body", "not a JSON object")
            _check_credentials(mapping.request_from_body(body))
        except ValueError as exc:
            return _answer(envelope.BAD_REQUEST, f"请求参数错误: {exc}")
        filing = authority.file(signer, body)
        if filing is None:
            return _answer(mapping.DUPLICATE_REQUEST, "请求流水号重复但申请内容不一致")
        return _answer(envelope.OK, mapping.OK_MESSAGE, mapping.data_from_filing(filing.filing))

    @app.get(f"{ADMIN_PREFIX}/callbacks", include_in_schema=False)
    async def get_callbacks() -> dict[str, list[dict[str, Any]]]:
        return {
            "callbacks": [{"SLBH": a.filing_no, "status": a.status} for a in authority.callbacks]
        }

    @app.get(f"{ADMIN_PREFIX}/policy", include_in_schema=False)
    async def get_policy() -> dict[str, Any]:
        return {"policy": authority.policy_name, "decision_delay_s": authority.decision_delay_s}

    @app.put(f"{ADMIN_PREFIX}/policy", include_in_schema=False)
    async def put_policy(settings: PolicySettings) -> dict[str, Any]:
        authority.policy_name, authority.policy = settings.policy, POLICIES[settings.policy]
        if settings.decision_delay_s is not None:
            authority.decision_delay_s = settings.decision_delay_s
        return await get_policy()

    return app
