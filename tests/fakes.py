"""In-memory fakes of the ports (``adapters/ports.py``), for unit tests of the services.

Each fake satisfies its Protocol, answers from the records it was given (any
other is ``NotFound``) and keeps every call it got in ``calls`` (a failing or
cancelled one too). It can be told to fail (``failure``, raised on every call;
``unavailable()`` sets a ``PlatformUnavailable``) or to be slow (``delay_s``
before it answers). No socket, no simulator: how each platform really behaves
is the business of ``contract_tests/``.

Here are the two registries the application service asks for evidence; a fake
of another port goes here too, on the same base, when a unit test needs it.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

from schemas.errors import ConnectorError, NotFound, PlatformUnavailable
from schemas.evidence import BusinessLicence, ProjectApproval

A = TypeVar("A")


class FakePlatform(Generic[A]):
    """What every fake shares: the calls it got (one argument each), a failure, a delay."""

    platform = "fake"

    def __init__(self) -> None:
        self.calls: list[A] = []
        self.failure: ConnectorError | None = None
        self.delay_s = 0.0

    def unavailable(self, reason: str = "timed out (ReadTimeout)") -> None:
        """Fail every call from now on as a platform that is down does."""
        self.failure = PlatformUnavailable(self.platform, reason)

    async def _called(self, argument: A) -> None:
        self.calls.append(argument)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.failure is not None:
            raise self.failure


class FakeLicenceRegistry(FakePlatform[str]):
    """``LicenceRegistry``: the licences it was given, by uscc."""

    platform = "licence"

    def __init__(self, *licences: BusinessLicence) -> None:
        super().__init__()
        self.licences = {licence.uscc: licence for licence in licences}

    async def fetch_licence(self, uscc: str) -> BusinessLicence:
        await self._called(uscc)
        if uscc not in self.licences:
            raise NotFound(f"no licence for {uscc}")
        return self.licences[uscc]


class FakeProjectRegistry(FakePlatform[str]):
    """``ProjectRegistry``: the approvals it was given, by project code."""

    platform = "project"

    def __init__(self, *projects: ProjectApproval) -> None:
        super().__init__()
        self.projects = {project.project_code: project for project in projects}

    async def fetch_project(self, project_code: str) -> ProjectApproval:
        await self._called(project_code)
        if project_code not in self.projects:
            raise NotFound(f"no project {project_code}")
        return self.projects[project_code]
