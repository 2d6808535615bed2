"""The ports the core depends on: one small Protocol per capability.

Adapters implement them; the core never imports an adapter module directly
(the composition root in ``gateway/bootstrap.py`` wires them).
"""

from __future__ import annotations

from typing import Protocol

from schemas.evidence import BusinessLicence, ProjectApproval


class LicenceRegistry(Protocol):
    """电子证照库: business licences by 统一社会信用代码."""

    async def fetch_licence(self, uscc: str) -> BusinessLicence:
        """Raise ``NotFound`` if there is none, ``PlatformUnavailable`` if the platform failed."""
        ...


class ProjectRegistry(Protocol):
    """投资项目在线审批监管平台: project approvals and filings by project code."""

    async def fetch_project(self, project_code: str) -> ProjectApproval:
        """Raise ``NotFound`` if there is none, ``PlatformUnavailable`` if the platform failed."""
        ...
