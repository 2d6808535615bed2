"""The connector with its platforms simulated on loopback, and its API served."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
from pydantic import SecretStr

from adapters.registry import PLATFORMS
from adapters.simulation import ServedApp, SimulatorControl
from gateway.api.app import create_app
from gateway.bootstrap import Container, bootstrap
from gateway.devbroker import free_port
from gateway.sandbox import start_simulators
from gateway.settings import EvidenceSettings, Settings
from schemas.seed import load_seed


@dataclass
class Platform:
    served: ServedApp
    control: SimulatorControl

    async def admin(self, method: str, path: str, json: object = None) -> httpx.Response:
        """Call the simulator's admin interface (/_admin/...)."""
        async with httpx.AsyncClient(base_url=self.served.url, timeout=10) as client:
            response = await client.request(method, f"/_admin/{path}", json=json)
        response.raise_for_status()
        return response


@pytest.fixture
def api_port() -> int:
    return free_port()


@pytest.fixture
def platforms(settings: Settings, api_port: int) -> Iterator[dict[str, Platform]]:
    """Every simulated platform (default seed); settings point at them, with test secrets."""
    settings.permit.app_secret = SecretStr("permit-app-secret")
    settings.permit.callback_app_id = "road-authority"
    settings.permit.callback_key = SecretStr("permit-callback-secret")
    settings.ywtb.app_secret = SecretStr("ywtb-app-secret")
    settings.ywtb.callback_app_id = "ywtb-platform"
    settings.ywtb.callback_key = SecretStr("ywtb-callback-secret")
    settings.marketing.password = SecretStr("marketing-password")
    settings.worker.retry_delays_s = [0.5, 0.5]
    settings.evidence = EvidenceSettings(budget_s=1.0, max_age_s=3600)
    settings.sandbox.permit_decision_delay_s = 1.0
    settings.sandbox.callback_backoff_s = 0.2
    controls = {platform.name: SimulatorControl() for platform in PLATFORMS}
    served = start_simulators(
        settings, load_seed(), f"http://127.0.0.1:{api_port}", controls=controls
    )
    running = {name: Platform(app, controls[name]) for name, app in served.items()}
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
    settings: Settings, platforms: dict[str, Platform], connector: Container, api_port: int
) -> AsyncIterator[httpx.AsyncClient]:
    """The API served by uvicorn on loopback, with the sandbox key."""
    with ServedApp(create_app(settings), port=api_port) as served:
        async with httpx.AsyncClient(
            base_url=served.url,
            headers={"Authorization": "Bearer sandbox-key"},
            timeout=30,
        ) as client:
            yield client
