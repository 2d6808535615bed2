"""占掘路 permit platform as the core sees it: settings, the ``permit_authority`` port,
simulator, and its decision callbacks."""

from __future__ import annotations

from fastapi import FastAPI

from adapters.envelope import CALLBACK_ACK
from adapters.permit import simulator
from adapters.permit.client import PermitClient
from adapters.permit.errors import PLATFORM
from adapters.permit.mapping import decision_from_callback
from adapters.platform import (
    Callback,
    Platform,
    SignedPlatformSettings,
    Simulated,
    client_of,
)
from schemas.permits import PermitDecision

CALLBACK_PATH = "/callbacks/permits"


class PermitSettings(SignedPlatformSettings):
    """占掘路行政审批: the road authority's permit platform."""


def _simulator(settings: PermitSettings, simulated: Simulated) -> FastAPI:
    return simulator.create_app(
        **settings.credentials(),
        callback_url=simulated.api_url + CALLBACK_PATH,
        callback_app_id=settings.callback_app_id,
        callback_secret=settings.callback_key.get_secret_value(),
        decision_delay_s=simulated.decision_delay_s,
        policy="refuse-long",
        control=simulated.control,
        callback_backoff_s=simulated.callback_backoff_s,
    )


PERMIT = Platform(
    name=PLATFORM,
    settings_model=PermitSettings,
    role="permit_authority",
    client=client_of(PermitClient),
    simulator=_simulator,
    callback=Callback(
        path=CALLBACK_PATH,
        route_name="permit_callback",
        summary="The road authority's permit decision (signed)",
        model=PermitDecision,
        decode=decision_from_callback,
        ack=CALLBACK_ACK,
    ),
)
