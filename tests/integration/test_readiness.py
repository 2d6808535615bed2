"""What /readyz and a saturated API tell ops and clients: the truth, quickly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from adapters.simulation import ServedApp
from gateway.api.app import create_app
from gateway.bootstrap import Container
from gateway.devbroker import DevBroker
from gateway.settings import Settings
from tests.integration.conftest import Platform
from tests.integration.test_applications import JINGAN, LINGANG, low_voltage

AUTH = {"Authorization": "Bearer sandbox-key"}


@dataclass
class Served:
    client: httpx.AsyncClient
    container: Container  # the served process's own: its breakers, its loops


@pytest.fixture
async def served(settings: Settings, platforms: dict[str, Platform]) -> AsyncIterator[Served]:
    """The API served over loopback, with a client and a look at the container it built."""
    app = create_app(settings)
    with ServedApp(app) as running:
        async with httpx.AsyncClient(base_url=running.url, headers=AUTH, timeout=30) as client:
            yield Served(client, app.state.container)


async def test_an_open_circuit_is_degraded_not_down_and_names_the_real_cause(
    served: Served, platforms: dict[str, Platform]
) -> None:
    api_of = served.client
    assert (await api_of.get("/readyz")).json()["status"] == "ready"
    platforms["licence"].control.faults.down = True
    before = datetime.now(UTC)

    failed = await api_of.get(f"/api/v1/evidence/licences/{JINGAN}")  # three attempts
    assert failed.status_code == 503
    assert failed.json()["detail"] == "licence: answered HTTP 503"
    assert failed.headers["Retry-After"] == "1"  # api.retry_after_s: no better estimate
    failed = await api_of.get(f"/api/v1/evidence/licences/{JINGAN}")  # five failures: open
    assert failed.status_code == 503
    calls = platforms["licence"].control.calls.total()
    fast = await api_of.get(f"/api/v1/evidence/licences/{JINGAN}")

    assert platforms["licence"].control.calls.total() == calls  # failed fast, no call
    assert fast.status_code == 503
    assert fast.headers["content-type"] == "application/problem+json"
    assert fast.json()["detail"] == "licence: circuit open after: answered HTTP 503"
    assert 25 <= int(fast.headers["Retry-After"]) <= 30  # when the breaker lets a trial through

    ready = await api_of.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "degraded"
    assert body["open_circuits"] == ["licence"]
    licence = body["checks"]["platforms"]["licence"]
    assert licence["state"] == "open"
    assert licence["last_failure"] == "answered HTTP 503"
    opened_at = datetime.fromisoformat(licence["opened_at"])
    assert before - timedelta(seconds=1) <= opened_at <= datetime.now(UTC)
    half_open_at = datetime.fromisoformat(licence["half_open_at"])
    assert half_open_at - opened_at == timedelta(seconds=30)
    assert body["checks"]["platforms"]["project"]["opened_at"] is None


async def test_a_stuck_loop_makes_readyz_503_naming_it(served: Served) -> None:
    api_of, connector = served.client, served.container
    connector.loops.state("relay").running = True
    connector.loops.state("relay").beat()
    assert (await api_of.get("/readyz")).status_code == 200

    connector.loops.state("relay").running = False  # its supervisor gave up, or it never ran
    ready = await api_of.get("/readyz")

    assert ready.status_code == 503
    assert ready.json()["status"] == "not_ready"
    assert ready.json()["failing"] == ["loop relay"]
    assert ready.json()["checks"]["loops"]["stuck"] == ["relay"]


async def test_without_the_broker_readyz_answers_503_quickly(
    served: Served, broker: DevBroker
) -> None:
    api_of = served.client
    assert (await api_of.get("/readyz")).status_code == 200
    broker.stop()

    started = time.monotonic()
    ready = await api_of.get("/readyz")
    took = time.monotonic() - started

    assert ready.status_code == 503
    assert ready.json()["failing"] == ["broker"]
    assert ready.json()["checks"]["store"] == {"ok": True}
    assert took < 4.0  # each check is bounded (api.readiness_timeout_s, 2 s)


async def test_beyond_the_in_flight_limit_and_its_line_the_api_answers_503_at_once(
    settings: Settings, platforms: dict[str, Platform]
) -> None:
    settings.api.max_in_flight = 1
    settings.api.max_queued = 0  # no line: the second request is beyond it
    platforms["licence"].control.faults.latency_s = 2.0  # the one request in flight waits
    with ServedApp(create_app(settings)) as served:
        async with (
            httpx.AsyncClient(base_url=served.url, headers=AUTH, timeout=30) as first,
            httpx.AsyncClient(base_url=served.url, headers=AUTH, timeout=30) as second,
        ):
            slow = asyncio.create_task(
                first.post("/api/v1/applications", json=low_voltage(LINGANG))
            )
            await asyncio.sleep(0.5)
            started = time.monotonic()
            rejected = await second.post("/api/v1/applications", json=low_voltage(JINGAN))
            took = time.monotonic() - started
            alive = await second.get("/healthz")
            accepted = await slow

    assert rejected.status_code == 503
    assert rejected.headers["content-type"] == "application/problem+json"
    assert rejected.json()["type"] == "/problems/overloaded"
    assert int(rejected.headers["Retry-After"]) >= 1
    assert took < 1.0
    assert alive.status_code == 200
    assert accepted.status_code == 201
