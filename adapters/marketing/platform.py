"""营销系统 as the core sees it: settings, the ``marketing`` port, simulator."""

from __future__ import annotations

from fastapi import FastAPI

from adapters.marketing import simulator
from adapters.marketing.client import MarketingClient
from adapters.marketing.errors import PLATFORM
from adapters.platform import (
    Platform,
    Simulated,
    SoapSettings,
    soap_client,
)


class MarketingSettings(SoapSettings):
    """营销系统: the utility's marketing system (SOAP, WS-Security UsernameToken)."""


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
    client=soap_client(MarketingClient),
    simulator=_simulator,
)
