"""投资项目在线审批监管平台 as the core sees it: settings, the ``projects`` port, simulator."""

from __future__ import annotations

from fastapi import FastAPI

from adapters.platform import (
    Platform,
    SigningSettings,
    Simulated,
    client_of,
)
from adapters.project import simulator
from adapters.project.client import ProjectClient
from adapters.project.errors import PLATFORM


class ProjectSettings(SigningSettings):
    """投资项目在线审批监管平台 (investment project approval platform), signed REST."""


def _simulator(settings: ProjectSettings, simulated: Simulated) -> FastAPI:
    return simulator.create_app(simulated.seed, control=simulated.control, **settings.credentials())


PROJECT = Platform(
    name=PLATFORM,
    settings_model=ProjectSettings,
    role="projects",
    client=client_of(ProjectClient),
    simulator=_simulator,
)
