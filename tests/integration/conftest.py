"""The connector with its government platforms simulated on loopback, and its API served."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest

from adapters.licence import simulator as licence_simulator
from adapters.project import simulator as project_simulator
from adapters.simulation import ServedApp, SimulatorControl
from gateway.api.app import create_app
from gateway.bootstrap import Container, bootstrap
from gateway.settings import EvidenceSettings, Settings
from schemas.seed import load_seed


@dataclass
class Platform:
    served: ServedApp
    control: SimulatorControl


@pytest.fixture
def platforms(settings: Settings) -> Iterator[dict[str, Platform]]:
    """The licence and project simulators serving the default seed; settings point at them."""
    seed = load_seed()
    controls = {"licence": SimulatorControl(), "project": SimulatorControl()}
    apps = {
        "licence": licence_simulator.create_app(
            seed,
            username=settings.licence.username,
            password=settings.licence.password.get_secret_value(),
            control=controls["licence"],
        ),
        "project": project_simulator.create_app(
            seed,
            app_key=settings.project.app_key,
            app_secret=settings.project.app_secret.get_secret_value(),
            control=controls["project"],
        ),
    }
    running = {name: Platform(ServedApp(app).start(), controls[name]) for name, app in apps.items()}
    settings.licence.url = running["licence"].served.url
    settings.project.url = running["project"].served.url
    settings.evidence = EvidenceSettings(budget_s=1.0, max_age_s=3600)
    try:
        yield running
    finally:
        for platform in running.values():
            platform.served.stop()


@pytest.fixture
async def connector(settings: Settings, platforms: dict[str, Platform]) -> AsyncIterator[Container]:
    """The connector's parts for the test's own use (relay, workers, reading the store)."""
    built = await bootstrap(settings)
    try:
        yield built
    finally:
        await built.aclose()


@pytest.fixture
async def api(
    settings: Settings, platforms: dict[str, Platform], connector: Container
) -> AsyncIterator[httpx.AsyncClient]:
    """The API served by uvicorn on loopback, with the sandbox key."""
    with ServedApp(create_app(settings)) as served:
        async with httpx.AsyncClient(
            base_url=served.url,
            headers={"Authorization": "Bearer sandbox-key"},
            timeout=30,
        ) as client:
            yield client
