"""投资项目在线审批监管平台 as the core sees it: settings, the ``projects`` port, simulator."""

from __future__ import annotations

from fastapi import FastAPI
from httpx import AsyncClient
from pydantic import Field, SecretStr

from adapters.platform import PLACEHOLDER, Platform, PlatformSettings, Simulated, endpoint
from adapters.ports import ProjectRegistry
from adapters.project import simulator
from adapters.project.client import ProjectClient
from adapters.project.errors import PLATFORM
from adapters.resilience import CircuitBreaker


class ProjectSettings(PlatformSettings):
    """投资项目在线审批监管平台 (investment project approval platform), signed REST."""

    app_id: str = Field("ywtb-connector", description="our app id on the platform")
    app_secret: SecretStr = Field(SecretStr(PLACEHOLDER), description="app secret for signing")
    algorithm: str = Field("hmac-sha256", description="signature algorithm: hmac-sha256, hmac-sm3")


def _client(
    settings: ProjectSettings, http: AsyncClient, breaker: CircuitBreaker
) -> ProjectRegistry:
    return ProjectClient(
        app_id=settings.app_id,
        app_secret=settings.app_secret.get_secret_value(),
        algorithm=settings.algorithm,
        **endpoint(settings, http, breaker),
    )


def _simulator(settings: ProjectSettings, simulated: Simulated) -> FastAPI:
    return simulator.create_app(
        simulated.seed,
        app_id=settings.app_id,
        app_secret=settings.app_secret.get_secret_value(),
        algorithm=settings.algorithm,
        control=simulated.control,
    )


PROJECT = Platform(
    name=PLATFORM,
    settings_model=ProjectSettings,
    role="projects",
    client=_client,
    simulator=_simulator,
)
