"""``CaseStatusSink`` over 一网通办's signed JSON REST status interface (``openapi.yaml``)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from adapters.resilience import httpx_errors, raise_for_server_error, retry_transient
from adapters.signing import get_algorithm, sign_request
from adapters.ywtb import mapping
from adapters.ywtb.errors import PLATFORM, envelope_error, unreadable_answer
from schemas.cases import CaseStatusUpdate
from schemas.errors import InvalidInput


class CaseStatusClient:
    """Pushes case status (办件状态推送); every request signed, timed out and retried.

    Pushes are idempotent on the platform side by ``SJID`` (the update's
    ``event_id``), so a retry after a lost answer cannot apply a stage twice.
    ``http`` is owned by the caller; the client only adds the base URL,
    signing headers and a timeout per call.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        app_id: str,
        app_secret: str,
        algorithm: str = "hmac-sha256",
        timeout_s: float = 5.0,
        attempts: int = 3,
    ) -> None:
        get_algorithm(algorithm)  # refuse an unknown algorithm at start-up, not on first call
        self._http = http
        self._url = base_url.rstrip("/") + mapping.STATUS_PATH
        self._app_id = app_id
        self._app_secret = app_secret
        self._algorithm = algorithm
        self._timeout = httpx.Timeout(timeout_s)
        self._attempts = attempts

    async def push_status(self, update: CaseStatusUpdate) -> None:
        """Push one stage change; a repeat of an accepted push is success.

        Raises ``InvalidInput`` (before sending), ``Unauthorized``, ``Conflict``
        (a later state is already on the platform), ``PlatformRejected`` or,
        after the last attempt, ``PlatformUnavailable``.
        """
        try:
            body = mapping.status_body(update)
        except ValueError as exc:
            field, _, reason = str(exc).partition(": ")
            raise InvalidInput(field, reason, platform=PLATFORM) from exc
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        async for attempt in retry_transient(self._attempts):
            with attempt, httpx_errors(PLATFORM):
                response = await self._send_signed(content)
                raise_for_server_error(PLATFORM, response)
                _check_answer(response)
                return
        raise AssertionError("retry_transient neither returned nor raised")  # pragma: no cover

    async def _send_signed(self, content: bytes) -> httpx.Response:
        """POST with a fresh timestamp and nonce over exactly what goes on the wire."""
        request = self._http.build_request(
            "POST",
            self._url,
            content=content,
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "Accept": "application/json",
            },
            timeout=self._timeout,
        )
        request.headers.update(
            sign_request(
                "POST",
                request.url.raw_path.decode("ascii"),
                content,
                app_id=self._app_id,
                secret=self._app_secret,
                algorithm=self._algorithm,
            )
        )
        return await self._http.send(request)


def _check_answer(response: httpx.Response) -> None:
    """Return if the envelope says success; raise the error its code stands for otherwise."""
    try:
        body: Any = response.json()
    except ValueError:
        raise unreadable_answer("not JSON", response.status_code) from None
    if not isinstance(body, dict) or not isinstance(body.get("code"), str):
        raise unreadable_answer("no envelope code", response.status_code)
    code, message = body["code"], str(body.get("msg") or "")
    if code != mapping.OK:
        raise envelope_error(code, message or f"code {code}")
