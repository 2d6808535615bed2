"""``ProjectRegistry`` over the platform's signed JSON REST interface (``openapi.yaml``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from adapters.project import mapping
from adapters.project.errors import PLATFORM, envelope_error, unreadable_answer
from adapters.resilience import httpx_errors, raise_for_server_error, retry_transient
from adapters.signing import get_algorithm, sign_request
from schemas.errors import InvalidInput
from schemas.evidence import ProjectApproval


class ProjectClient:
    """Fetches project approvals and filings; every request signed, timed out and retried.

    ``http`` is owned by the caller (connection pool, TLS settings); the client
    only adds the base URL, signing headers and a timeout per call.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        app_key: str,
        app_secret: str,
        algorithm: str = "hmac-sha256",
        timeout_s: float = 5.0,
        attempts: int = 3,
    ) -> None:
        get_algorithm(algorithm)  # refuse an unknown algorithm at start-up, not on first call
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._app_key = app_key
        self._app_secret = app_secret
        self._algorithm = algorithm
        self._timeout = httpx.Timeout(timeout_s)
        self._attempts = attempts

    async def fetch_project(self, project_code: str) -> ProjectApproval:
        """The approval or filing of one project (operation GetProject).

        Raises ``InvalidInput``, ``NotFound``, ``Unauthorized``, ``PlatformRejected``
        or, after the last attempt, ``PlatformUnavailable``.
        """
        if not mapping.PROJECT_CODE.fullmatch(project_code):
            raise InvalidInput("project_code", "expected YYYY-DDDDDD-II-TT-NNNNNN")
        url = f"{self._base_url}/api/v1/projects/{quote(project_code, safe='')}"
        async for attempt in retry_transient(self._attempts):
            with attempt, httpx_errors(PLATFORM):
                response = await self._send_signed("GET", url)
                raise_for_server_error(PLATFORM, response)
                return _read_project(response)
        raise AssertionError("retry_transient neither returned nor raised")  # pragma: no cover

    async def _send_signed(self, method: str, url: str) -> httpx.Response:
        """Send one request with a fresh timestamp and nonce over exactly what goes on the wire."""
        request = self._http.build_request(
            method, url, headers={"Accept": "application/json"}, timeout=self._timeout
        )
        target = request.url.raw_path.decode("ascii")
        request.headers.update(
            sign_request(
                method,
                target,
                request.content,
                app_id=self._app_key,
                secret=self._app_secret,
                algorithm=self._algorithm,
            )
        )
        return await self._http.send(request)


def _read_project(response: httpx.Response) -> ProjectApproval:
    """The envelope's data as a ``ProjectApproval``, or the error its code stands for."""
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
        return mapping.project_from_data(data)
    except ValueError as exc:
        raise unreadable_answer(str(exc), response.status_code) from exc
