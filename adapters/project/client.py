"""``ProjectRegistry`` over the platform's signed JSON REST interface (``openapi.yaml``)."""

from __future__ import annotations

from urllib.parse import quote

import httpx

from adapters.envelope import send_signed
from adapters.project import mapping
from adapters.project.errors import ENVELOPE, PLATFORM
from adapters.resilience import CircuitBreaker, httpx_errors, retry_transient
from adapters.signing import Signer
from schemas.errors import InvalidInput
from schemas.evidence import PROJECT_CODE, ProjectApproval


class ProjectClient:
    """Fetches project approvals and filings; every request signed, timed out and retried.

    ``http`` is owned by the caller (connection pool, TLS settings); the client
    only adds the base URL, signing headers and a timeout per call. ``breaker``
    (default: one of its own) guards every attempt.
    """

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        base_url: str,
        app_id: str,
        app_secret: str,
        algorithm: str = "hmac-sha256",
        timeout_s: float = 5.0,
        attempts: int = 3,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._signer = Signer(app_id, app_secret, algorithm)
        self._timeout = httpx.Timeout(timeout_s)
        self._attempts = attempts
        self.breaker = breaker or CircuitBreaker(PLATFORM)

    async def fetch_project(self, project_code: str) -> ProjectApproval:
        """The approval or filing of one project (operation GetProject).

        Raises ``InvalidInput``, ``NotFound``, ``Unauthorized``, ``PlatformRejected``
        or, after the last attempt (at once while the breaker is open),
        ``PlatformUnavailable``.
        """
        if not PROJECT_CODE.fullmatch(project_code):
            raise InvalidInput("project_code", "expected YYYY-DDDDDD-II-TT-NNNNNN")
        url = f"{self._base_url}/api/v1/projects/{quote(project_code, safe='')}"
        async for attempt in retry_transient(self._attempts):
            with attempt, self.breaker.guard(), httpx_errors(PLATFORM):
                response = await send_signed(
                    self._http, self._signer, "GET", url, http_timeout=self._timeout
                )
                return ENVELOPE.read_data(response, mapping.project_from_data)
        raise AssertionError("retry_transient neither returned nor raised")  # pragma: no cover
