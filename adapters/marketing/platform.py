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
    client_of,
)


class MarketingSettings(SoapSettings):
    """营销系统: the utility's marketing system (SOAP, WS-Security UsernameToken)."""


def _simulator(settings: MarketingSettings, simulated: Simulated) -> FastAPI:
    return simulator.create_app(control=simulated.control, **settings.credentials())


MARKETING = Platform(
    name=PLATFORM,
    settings_model=MarketingSettings,
    role="marketing",
    client=client_of(MarketingClient),
    simulator=_simulator,
)
