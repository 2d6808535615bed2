"""营销系统 as the core sees it: settings, the ``marketing`` port, simulator."""

from __future__ import annotations

from fastapi import FastAPI
from httpx import AsyncClient
from pydantic import Field, SecretStr

from adapters.marketing import simulator
from adapters.marketing.client import MarketingClient
from adapters.marketing.errors import PLATFORM
from adapters.platform import PLACEHOLDER, Platform, PlatformSettings, Simulated, endpoint
from adapters.ports import MarketingSystem
from adapters.resilience import CircuitBreaker


class MarketingSettings(PlatformSettings):
    """营销系统: the utility's marketing system (SOAP, WS-Security UsernameToken)."""

    username: str = Field("ywtb-connector", description="WS-Security user name")
    password: SecretStr = Field(SecretStr(PLACEHOLDER), description="WS-Security password")


def _client(
    settings: MarketingSettings, http: AsyncClient, breaker: CircuitBreaker
) -> MarketingSystem:
    return MarketingClient(
        username=settings.username,
        password=settings.password.get_secret_value(),
        **endpoint(settings, http, breaker),
    )


def _simulator(settings: MarketingSettings, simulated: Simulated) -> FastAPI:
    return simulator.create_app(
        username=settings.username,
        password=settings.password.get_secret_value(),
        control=simulated.control,
    )


MARKETING = Platform(
    name=PLATFORM,
    settings_model=MarketingSettings,
    role="marketing",
    client=_client,
    simulator=_simulator,
)
