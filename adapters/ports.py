"""The ports the core depends on: one small Protocol per capability.

Adapters implement them. The core (``gateway/``) imports no module of a
platform folder: each platform declares the port it fills in its
``platform.py``, ``adapters/registry.py`` lists the platforms, and the
composition root (``gateway/bootstrap.py``) builds one client per port from
that list. ``tests/unit/test_boundaries.py`` walks the imports to hold it so.
"""

from __future__ import annotations

from typing import Protocol

from schemas.cases import CaseStatusUpdate, MarketingNotice
from schemas.evidence import BusinessLicence, ProjectApproval
from schemas.permits import PermitFiling, PermitRequest


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


class PermitAuthority(Protocol):
    """占掘路 road authority: files permit applications; decisions come back as callbacks."""

    async def file_permit(self, request: PermitRequest) -> PermitFiling:
        """Raise ``PlatformRejected`` if refused at filing; transient errors otherwise."""
        ...


class CaseStatusSink(Protocol):
    """一网通办 status interface (办件状态推送)."""

    async def push_status(self, update: CaseStatusUpdate) -> None:
        """Idempotent: the platform treats a repeated push of the same state as success."""
        ...


class MarketingSystem(Protocol):
    """The utility's marketing system (营销系统) interface."""

    async def notify(self, notice: MarketingNotice) -> None:
        """Deliver one notice; the marketing system deduplicates on ``notice.event_id``."""
        ...
