"""The composition root: ``bootstrap(settings)`` builds everything the connector runs on.

Called from the FastAPI lifespan and from each CLI command; nothing is built at
import time. Keyword overrides replace a part (tests hand in their own).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import select
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
from gateway.applications import ApplicationService
from gateway.bus import KafkaBus
from gateway.callbacks import CallbackVerifier
from gateway.cases import CaseService
from gateway.deadlines import DeadlineService
from gateway.evidence import EvidenceService
from gateway.permits import PermitService
from gateway.reports import ReportService
from gateway.settings import (
    PlatformSettings,
    Settings,
    SignedPlatformSettings,
    load_settings,
)
from gateway.store.db import Sessions, open_store, transaction
from gateway.store.models import ApiClient, utcnow
from gateway.supervise import Loops
from gateway.tracing import configure_tracing, instrument_http
from schemas.deadlines import load_calendar


def hash_key(key: str) -> str:
    """API keys are stored as their SHA-256 (keys are random, long and never reused)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


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
    loops: Loops = field(default_factory=Loops)

    async def aclose(self) -> None:
        await self.bus.close()
        await self.http.aclose()
        await self.engine.dispose()


async def register_api_clients(sessions: Sessions, keys: dict[str, str]) -> None:
    """Make the configured clients' keys valid (a changed key replaces the old one)."""
    async with transaction(sessions) as session:
        for name, key in keys.items():
            client = await session.scalar(select(ApiClient).where(ApiClient.name == name))
            if client is None:
                session.add(ApiClient(name=name, key_hash=hash_key(key), created_at=utcnow()))
            else:
                client.key_hash = hash_key(key)


async def bootstrap(settings: Settings | None = None, **overrides: Any) -> Container:
    settings = settings or load_settings()
    if not settings.kafka.bootstrap:
        raise RuntimeError(
            "YWTB_KAFKA_BOOTSTRAP is not set (only `ywtb sandbox` starts a development broker)"
        )
    configure_tracing(settings.tracing)
    engine, sessions = await open_store(settings.store)
    keys = {name: key.get_secret_value() for name, key in settings.security.api_keys.items()}
    if settings.environment == "sandbox":
        keys["sandbox"] = settings.sandbox.api_key.get_secret_value()
    await register_api_clients(sessions, keys)

    http: httpx.AsyncClient = instrument_http(
        overrides.pop("http", None) or httpx.AsyncClient(headers={"User-Agent": "ywtb-connector"})
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
        cases=CaseService(sessions, applications, case_status, deadlines),
        deadlines=deadlines,
        reports=ReportService(sessions, deadlines),
        callbacks={
            "permit": CallbackVerifier("permit", settings.permit, sessions),
            "ywtb": CallbackVerifier("ywtb", settings.ywtb, sessions),
        },
        breakers=breakers,
    )
