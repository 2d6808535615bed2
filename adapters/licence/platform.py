"""电子证照库 as the core sees it: settings, the ``licences`` port, simulator."""

from __future__ import annotations

from fastapi import FastAPI

from adapters.licence import simulator
from adapters.licence.client import LicenceClient
from adapters.licence.errors import PLATFORM
from adapters.platform import (
    Platform,
    Simulated,
    SoapSettings,
    client_of,
)


class LicenceSettings(SoapSettings):
    """电子证照库 (electronic licence library), SOAP with WS-Security UsernameToken."""


def _simulator(settings: LicenceSettings, simulated: Simulated) -> FastAPI:
    return simulator.create_app(simulated.seed, control=simulated.control, **settings.credentials())


LICENCE = Platform(
    name=PLATFORM,
    settings_model=LicenceSettings,
    role="licences",
    client=client_of(LicenceClient),
    simulator=_simulator,
)
