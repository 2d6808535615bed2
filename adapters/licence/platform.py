"""电子证照库 as the core sees it: settings, the ``licences`` port, simulator."""

from __future__ import annotations

from fastapi import FastAPI
from httpx import AsyncClient
from pydantic import Field, SecretStr

from adapters.licence import simulator
from adapters.licence.client import LicenceClient
from adapters.licence.errors import PLATFORM
from adapters.platform import PLACEHOLDER, Platform, PlatformSettings, Simulated, endpoint
from adapters.ports import LicenceRegistry
from adapters.resilience import CircuitBreaker


class LicenceSettings(PlatformSettings):
    """电子证照库 (electronic licence library), SOAP with WS-Security UsernameToken."""

    username: str = Field("ywtb-connector", description="WS-Security user name")
    password: SecretStr = Field(SecretStr(PLACEHOLDER), description="WS-Security password")


def _client(
    settings: LicenceSettings, http: AsyncClient, breaker: CircuitBreaker
) -> LicenceRegistry:
    return LicenceClient(
        username=settings.username,
        password=settings.password.get_secret_value(),
        **endpoint(settings, http, breaker),
    )


def _simulator(settings: LicenceSettings, simulated: Simulated) -> FastAPI:
    return simulator.create_app(
        simulated.seed,
        username=settings.username,
        password=settings.password.get_secret_value(),
        control=simulated.control,
    )


LICENCE = Platform(
    name=PLATFORM,
    settings_model=LicenceSettings,
    role="licences",
    client=_client,
    simulator=_simulator,
)
