"""The connector with its platforms simulated on loopback, and its API served."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
from pydantic import SecretStr

from adapters.licence import simulator as licence_simulator
from adapters.marketing import simulator as marketing_simulator
from adapters.permit import simulator as permit_simulator
from adapters.project import simulator as project_simulator
from adapters.simulation import ServedApp, SimulatorControl
from adapters.ywtb import simulator as ywtb_simulator
from gateway.api.app import create_app
from gateway.bootstrap import Container, bootstrap
from gateway.devbroker import free_port
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
    seed = load_seed()
    controls = {
        name: SimulatorControl() for name in ("licence", "project", "permit", "ywtb", "marketing")
    }
    apps = {
        "licence": licence_simulator.create_app(
            seed,
            username=settings.licence.username,
            password=settings.licence.password.get_secret_value(),
            control=controls["licence"],
        ),
        "project": project_simulator.create_app(
            seed,
            app_id=settings.project.app_id,
            app_secret=settings.project.app_secret.get_secret_value(),
            control=controls["project"],
        ),
        "permit": permit_simulator.create_app(
            app_id=settings.permit.app_id,
            app_secret=settings.permit.app_secret.get_secret_value(),
            callback_url=f"http://127.0.0.1:{api_port}/callbacks/permits",
            callback_app_id=settings.permit.callback_app_id,
            callback_secret=settings.permit.callback_key.get_secret_value(),
            decision_delay_s=1.0,
            policy="refuse-long",
            control=controls["permit"],
            callback_backoff_s=0.2,
        ),
        "ywtb": ywtb_simulator.create_app(
            app_id=settings.ywtb.app_id,
            app_secret=settings.ywtb.app_secret.get_secret_value(),
            control=controls["ywtb"],
        ),
        "marketing": marketing_simulator.create_app(
            username=settings.marketing.username,
            password=settings.marketing.password.get_secret_value(),
            control=controls["marketing"],
        ),
    }
    running = {name: Platform(ServedApp(app).start(), controls[name]) for name, app in apps.items()}
    settings.licence.url = running["licence"].served.url
    settings.project.url = running["project"].served.url
    settings.permit.url = running["permit"].served.url
    settings.ywtb.url = running["ywtb"].served.url
    settings.marketing.url = running["marketing"].served.url
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
