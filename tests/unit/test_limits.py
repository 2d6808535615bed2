"""The body limit per route, in process (no sockets): 413 before the body is parsed."""

from __future__ import annotations

from types import SimpleNamespace

import httpx

from gateway.access import Clients
from gateway.api.app import create_app
from gateway.callbacks import CallbackVerifier
from gateway.settings import LimitsSettings, Settings

JSON = {"Authorization": "Bearer sandbox-key", "Content-Type": "application/json"}


def client(limits: LimitsSettings) -> httpx.AsyncClient:
    settings = Settings(limits=limits)
    app = create_app(settings)
    # Only what the middleware, the authentication and a refused signature read: no store.
    verifier = CallbackVerifier("ywtb", settings.ywtb, sessions=None)  # type: ignore[arg-type]
    app.state.container = SimpleNamespace(
        clients=Clients.from_settings(settings), settings=settings, callbacks={"ywtb": verifier}
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


async def test_a_route_override_takes_the_longest_prefix() -> None:
    limits = LimitsSettings(
        body_max_bytes=10_000,
        body_max_bytes_by_path={"/callbacks/": 1_000, "/callbacks/ywtb/": 5_000},
    )
    body = b'{"x": "' + b"y" * 2_000 + b'"}'
    async with client(limits) as api:
        permit = await api.post("/callbacks/permits", content=body, headers=JSON)
        case = await api.post("/callbacks/ywtb/cases", content=body, headers=JSON)
        application = await api.post("/api/v1/applications", content=body, headers=JSON)
    assert permit.status_code == 413
    assert permit.json()["detail"] == "request body over 1000 bytes"
    assert case.status_code == 401  # within 5 000: on to the signature check
    assert application.status_code == 422  # within the default: on to validation


async def test_json_nested_past_the_parser_is_a_400_problem_not_a_500() -> None:
    deep = b"[" * 200_000 + b"]" * 200_000
    async with client(LimitsSettings()) as api:
        response = await api.post("/api/v1/applications", content=deep, headers=JSON)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
