"""``PermitAuthority`` over the platform's signed JSON REST interface (``openapi.yaml``)."""

from __future__ import annotations

from typing import Any

import httpx

from adapters.permit import mapping
from adapters.permit.errors import PLATFORM, envelope_error, unreadable_answer
from adapters.resilience import httpx_errors, raise_for_server_error, retry_transient
from adapters.signing import get_algorithm, sign_request
from schemas.permits import PermitFiling, PermitRequest


class PermitClient:
    """Files 占掘路 permit applications; every request signed, timed out and retried.

    ``http`` is owned by the caller (connection pool, TLS settings); the client
    only adds the base URL, signing headers and a timeout per call. The decision
    arrives later as a callback (``mapping.decision_from_callback``).
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
        self._url = f"{base_url.rstrip('/')}/api/v1/permit-applications"
        self._app_id = app_id
        self._app_secret = app_secret
        self._algorithm = algorithm
        self._timeout = httpx.Timeout(timeout_s)
        self._attempts = attempts

    async def file_permit(self, request: PermitRequest) -> PermitFiling:
        """File one application (operation FilePermit) and return its 受理编号.

        Idempotent: the same works of the same application carry the same
        request id, so a retry or a repeat gets the first filing back. Raises
        ``Unauthorized``, ``Conflict``, ``PlatformRejected`` or, after the last
        attempt, ``PlatformUnavailable``.
        """
        content = mapping.encode(mapping.body_from_request(request))
        async for attempt in retry_transient(self._attempts):
            with attempt, httpx_errors(PLATFORM):
                response = await self._post_signed(content)
                raise_for_server_error(PLATFORM, response)
                return _read_filing(response)
        raise AssertionError("retry_transient neither returned nor raised")  # pragma: no cover

    async def _post_signed(self, content: bytes) -> httpx.Response:
        """Send one request with a fresh timestamp and nonce over exactly what goes on the wire."""
        request = self._http.build_request(
            "POST",
            self._url,
            content=content,
            headers={
                "Accept": "application/json",
                "Content-Type": "application/json; charset=utf-8",
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


def _read_filing(response: httpx.Response) -> PermitFiling:
    """The envelope's data as a ``PermitFiling``, or the error its code stands for."""
    try:
        body: Any = response.json()
    except ValueError:
        raise unreadable_answer("not JSON", response.status_code) from None
    if not isinstance(body, dict) or not isinstance(body.get("code"), str):
        raise unreadable_answer("no envelope code", response.status_code)
    code, message = body["code"], str(body.get("msg") or "")
    if code != mapping.OK:
        raise envelope_error(code, message or f"code {code}")
    data = body.get("data")
    if not isinstance(data, dict):
        raise unreadable_answer("success without data", response.status_code)
    try:
        return mapping.filing_from_data(data)
    except ValueError as exc:
        raise unreadable_answer(str(exc), response.status_code) from exc
