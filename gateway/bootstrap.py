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

from adapters.ports import (
    CaseStatusSink,
    LicenceRegistry,
    MarketingSystem,
    PermitAuthority,
    ProjectRegistry,
)
from adapters.registry import PLATFORMS, callback_of, calling_back
from adapters.resilience import CircuitBreaker
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
from gateway.settings import Settings, load_settings
from gateway.store.db import Sessions, open_store
from gateway.supervise import Loops
from gateway.tracing import configure_tracing, instrument_http
from schemas.cases import InboundCase
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
    http: httpx.AsyncClient = instrument_http(
        overrides.pop("http", None)
        or httpx.AsyncClient(
            headers={"User-Agent": "ywtb-connector"},
            transport=AuditTransport(
                httpx.AsyncHTTPTransport(),
                exchanges,
                {
                    httpx.URL(p.settings_of(settings).url).netloc.decode("ascii"): p.name
                    for p in PLATFORMS
                },
            ),
        )
    )
    breakers = {p.name: CircuitBreaker(p.name) for p in PLATFORMS}
    # The port each platform fills (a Container attribute), unless a test hands one in.
    ports: dict[str, Any] = {
        p.role: overrides.pop(p.role, None) or p.build_client(settings, http, breakers[p.name])
        for p in PLATFORMS
    }
    if overrides:
        raise TypeError(f"unknown overrides: {', '.join(overrides)}")
    evidence = EvidenceService(ports["licences"], ports["projects"], sessions, settings.evidence)
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
        evidence=evidence,
        applications=applications,
        permits=PermitService(sessions, ports["permit_authority"]),
        cases=CaseService(
            sessions,
            applications,
            ports["case_status"],
            deadlines,
            settings.stages,
            decode_case=callback_of(InboundCase).decode,
        ),
        deadlines=deadlines,
        reports=ReportService(sessions, deadlines),
        callbacks={
            platform.name: CallbackVerifier(
                platform.name,
                platform.settings_of(settings),
                sessions,
                exchanges,
                max_json_depth=settings.limits.json_max_depth,
            )
            for platform, _ in calling_back()
        },
        breakers=breakers,
        dead_letters=DeadLetters(settings.kafka, sessions, settings.dlq),
        clients=clients,
        exchanges=exchanges,
        loops=loops,
        **ports,
    )
