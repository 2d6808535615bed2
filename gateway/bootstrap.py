"""The composition root: ``bootstrap(settings)`` builds everything the connector runs on.

Called from the FastAPI lifespan and from each CLI command; nothing is built at
import time. Keyword overrides replace a part (tests hand in their own).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.licence.client import LicenceClient
from adapters.marketing.client import MarketingClient
from adapters.permit.client import PermitClient
from adapters.ports import (
    CaseStatusSink,
    LicenceRegistry,
    MarketingSystem,
    PermitAuthority,
    ProjectRegistry,
)
from adapters.project.client import ProjectClient
from adapters.resilience import CircuitBreaker
from adapters.ywtb.client import CaseStatusClient
from gateway.access import Clients
from gateway.applications import ApplicationService
from gateway.audit import AuditLog, AuditTransport
from gateway.bus import KafkaBus
from gateway.callbacks import CallbackVerifier
from gateway.cases import CaseService
from gateway.deadlines import DeadlineService
from gateway.dlq import DeadLetters
from gateway.evidence import EvidenceService
from gateway.logs import install_mask
from gateway.permits import PermitService
from gateway.protect import install, keyring_of
from gateway.reports import ReportService
from gateway.settings import (
    PlatformSettings,
    Settings,
    SignedPlatformSettings,
    load_settings,
)
from gateway.store.db import Sessions, open_store
from gateway.supervise import Loops
from gateway.tracing import configure_tracing, instrument_http
from schemas.deadlines import load_calendar

log = logging.getLogger(__name__)
_CLOSE_TIMEOUT_S = 3.0  # closing waits this long for each part (HTTP pool, database pool)


@dataclass
class Container:
    settings: Settings
    engine: AsyncEngine
    sessions: Sessions
    bus: KafkaBus
    http: httpx.AsyncClient
    licences: LicenceRegistry
    projects: ProjectRegistry
    permit_authority: PermitAuthority
    case_status: CaseStatusSink
    marketing: MarketingSystem
    evidence: EvidenceService
    applications: ApplicationService
    permits: PermitService
    cases: CaseService
    deadlines: DeadlineService
    reports: ReportService
    callbacks: dict[str, CallbackVerifier]
    breakers: dict[str, CircuitBreaker]
    dead_letters: DeadLetters
    clients: Clients
    exchanges: AuditLog
    loops: Loops = field(default_factory=Loops)

    async def aclose(self) -> None:
        """Close everything, each part bounded in time: a hung broker or database holds no one."""
        await self.exchanges.aclose()
        await self.bus.close()
        for name, closing in (("http", self.http.aclose), ("store", self.engine.dispose)):
            try:
                async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                    await closing()
            except TimeoutError:
                log.warning("closing timed out", extra={"part": name})


async def bootstrap(settings: Settings | None = None, **overrides: Any) -> Container:
    settings = settings or load_settings()
    if not settings.kafka.bootstrap:
        raise RuntimeError(
            "YWTB_KAFKA_BOOTSTRAP is not set (only `ywtb sandbox` starts a development broker)"
        )
    configure_tracing(settings.tracing)
    install(keyring_of(settings.protection))
    install_mask()
    engine, sessions = await open_store(settings.store)
    # The configured clients are the only truth, kept in memory: a client or key
    # not in the settings (or the sandbox key outside the sandbox) never works.
    clients = Clients.from_settings(settings)

    loops = Loops(settings.loops.stall_after_s)
    exchanges = AuditLog(sessions, settings.protection, loops)
    platforms: dict[str, PlatformSettings] = {
        "licence": settings.licence,
        "project": settings.project,
        "permit": settings.permit,
        "ywtb": settings.ywtb,
        "marketing": settings.marketing,
    }
    http: httpx.AsyncClient = instrument_http(
        overrides.pop("http", None)
        or httpx.AsyncClient(
            headers={"User-Agent": "ywtb-connector"},
            transport=AuditTransport(
                httpx.AsyncHTTPTransport(),
                exchanges,
                {httpx.URL(p.url).netloc.decode("ascii"): name for name, p in platforms.items()},
            ),
        )
    )
    breakers = {
        name: CircuitBreaker(name) for name in ("licence", "project", "permit", "ywtb", "marketing")
    }

    def common(name: str, platform: PlatformSettings) -> dict[str, Any]:
        """What every platform client takes: where, how long, how often, its breaker."""
        return {
            "base_url": platform.url,
            "timeout_s": platform.timeout_s,
            "attempts": platform.attempts,
            "breaker": breakers[name],
        }

    def signed(name: str, platform: SignedPlatformSettings) -> dict[str, Any]:
        return common(name, platform) | {
            "app_id": platform.app_id,
            "app_secret": platform.app_secret.get_secret_value(),
            "algorithm": platform.algorithm,
        }

    licences: LicenceRegistry = overrides.pop("licences", None) or LicenceClient(
        http=http,
        username=settings.licence.username,
        password=settings.licence.password.get_secret_value(),
        **common("licence", settings.licence),
    )
    projects: ProjectRegistry = overrides.pop("projects", None) or ProjectClient(
        http=http,
        app_id=settings.project.app_id,
        app_secret=settings.project.app_secret.get_secret_value(),
        algorithm=settings.project.algorithm,
        **common("project", settings.project),
    )
    permit_authority: PermitAuthority = overrides.pop("permit_authority", None) or PermitClient(
        http=http, **signed("permit", settings.permit)
    )
    case_status: CaseStatusSink = overrides.pop("case_status", None) or CaseStatusClient(
        http=http, **signed("ywtb", settings.ywtb)
    )
    marketing: MarketingSystem = overrides.pop("marketing", None) or MarketingClient(
        http=http,
        username=settings.marketing.username,
        password=settings.marketing.password.get_secret_value(),
        **common("marketing", settings.marketing),
    )
    if overrides:
        raise TypeError(f"unknown overrides: {', '.join(overrides)}")
    evidence = EvidenceService(licences, projects, sessions, settings.evidence)
    deadlines = DeadlineService(
        sessions, settings.deadlines, load_calendar(settings.deadlines.calendar_files)
    )
    applications = ApplicationService(sessions, evidence, settings.evidence, deadlines)
    return Container(
        settings=settings,
        engine=engine,
        sessions=sessions,
        bus=KafkaBus(settings.kafka),
        http=http,
        licences=licences,
        projects=projects,
        permit_authority=permit_authority,
        case_status=case_status,
        marketing=marketing,
        evidence=evidence,
        applications=applications,
        permits=PermitService(sessions, permit_authority),
        cases=CaseService(sessions, applications, case_status, deadlines, settings.stages),
        deadlines=deadlines,
        reports=ReportService(sessions, deadlines),
        callbacks={
            name: CallbackVerifier(
                name,
                platform,
                sessions,
                exchanges,
                max_json_depth=settings.limits.json_max_depth,
            )
            for name, platform in (("permit", settings.permit), ("ywtb", settings.ywtb))
        },
        breakers=breakers,
        dead_letters=DeadLetters(settings.kafka, sessions, settings.dlq),
        clients=clients,
        exchanges=exchanges,
        loops=loops,
    )
