"""``ProjectRegistry`` over the platform's signed JSON REST interface (``openapi.yaml``)."""

from __future__ import annotations

from functools import partial
from urllib.parse import quote

from adapters.envelope import SignedRestClient
from adapters.project import mapping
from adapters.project.errors import ENVELOPE, PLATFORM
from schemas.errors import InvalidInput
from schemas.evidence import PROJECT_CODE, ProjectApproval


class ProjectClient(SignedRestClient):
    """Fetches project approvals and filings; every request signed, timed out and retried
    (``SignedRestClient``)."""

    platform = PLATFORM

    async def fetch_project(self, project_code: str) -> ProjectApproval:
        """The approval or filing of one project (operation GetProject).

        Raises ``InvalidInput``, ``NotFound``, ``Unauthorized``, ``PlatformRejected``
        or, after the last attempt (at once while the breaker is open),
        ``PlatformUnavailable``.
        """
        if not PROJECT_CODE.fullmatch(project_code):
            raise InvalidInput("project_code", "expected YYYY-DDDDDD-II-TT-NNNNNN")
        path = f"/api/v1/projects/{quote(project_code, safe='')}"
        return await self.call(
            "GET",
            path,
            partial(ENVELOPE.read_data, parse=mapping.project_from_data),
            operation="fetch_project",
        )
