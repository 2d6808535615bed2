"""一网通办 as the core sees it: settings, the ``case_status`` port, simulator, and the
cases it files with us as callbacks."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import Field

from adapters.envelope import CALLBACK_ACK
from adapters.platform import (
    Callback,
    Platform,
    SignedPlatformSettings,
    Simulated,
    client_of,
)
from adapters.ywtb import simulator
from adapters.ywtb.client import CaseStatusClient
from adapters.ywtb.errors import PLATFORM
from adapters.ywtb.mapping import case_from_callback
from schemas.cases import InboundCase


class YwtbSettings(SignedPlatformSettings):
    """一网通办: case callbacks in, case status pushes out."""

    item_code: str = Field("310100-GDYD-001", description="事项编码 of 一证办电 on 一网通办")


def _simulator(settings: YwtbSettings, simulated: Simulated) -> FastAPI:
    return simulator.create_app(control=simulated.control, **settings.credentials())


YWTB = Platform(
    name=PLATFORM,
    settings_model=YwtbSettings,
    role="case_status",
    client=client_of(CaseStatusClient),
    simulator=_simulator,
    callback=Callback(
        path="/callbacks/ywtb/cases",
        route_name="case_callback",
        summary="A case filed on 一网通办 (signed); becomes one 一证办电 application",
        model=InboundCase,
        decode=case_from_callback,
        ack=CALLBACK_ACK,
    ),
)
