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
    soap_client,
)


class LicenceSettings(SoapSettings):
    """电子证照库 (electronic licence library), SOAP with WS-Security UsernameToken."""


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
    client=soap_client(LicenceClient),
    simulator=_simulator,
)
