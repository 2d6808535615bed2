"""Access rights, limits and strict input, tried as a client (or an attacker) would."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from adapters.signing import sign_request
from adapters.simulation import ServedApp
from adapters.ywtb.mapping import callback_body
from gateway.api.app import create_app
from gateway.bootstrap import Container
from gateway.devbroker import free_port
from gateway.runtime import api_server
from gateway.settings import ClientSettings, LimitsSettings, Settings
from gateway.store.models import Application, Nonce, Permit
from tests.integration.conftest import Platform
from tests.integration.test_applications import JINGAN, body, low_voltage
from tests.integration.test_async_flows import WORKS, a_case
from tests.running import settings_env

KEYS = {
    "alpha": "alpha-key-0123456789",
    "beta": "beta-key-0123456789",
    "reader": "reader-key-0123456789",
    "auditor": "auditor-key-0123456789",
    "slow": "slow-key-0123456789",
}
log = logging.getLogger(__name__)
WORK = ["applications:write", "applications:read", "evidence:read"]


def clients(*names: str) -> dict[str, ClientSettings]:
    scopes: dict[str, Any] = {
        "alpha": WORK,
        "beta": WORK,
        "reader": ["applications:read"],
        "auditor": ["applications:read", "applications:all"],
        "slow": WORK,
    }
    return {
        name: ClientSettings(
            keys=[SecretStr(KEYS[name]), SecretStr(f"{KEYS[name]}-next")],
            scopes=scopes[name],
            rate_per_s=2 if name == "slow" else 1000,
        )
        for name in names or tuple(KEYS)
    }


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.security.clients = clients()
    return settings


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


async def served(settings: Settings) -> AsyncIterator[str]:
    with ServedApp(create_app(settings), port=free_port()) as app:
        yield app.url


def a_uuid() -> str:
    return str(uuid.uuid4())


# --- clients, scopes, ownership ------------------------------------------------


async def test_another_clients_application_is_404_and_a_missing_scope_403(
    api: httpx.AsyncClient, connector: Container
) -> None:
    created = await api.post("/api/v1/applications", json=body(), headers=auth("alpha"))
    assert created.status_code == 201, created.text
    app_id = created.json()["id"]
    permit = await api.post(
        f"/api/v1/applications/{app_id}/permits", json=WORKS, headers=auth("alpha")
    )
    assert permit.status_code == 201, permit.text
    permit_id = permit.json()["id"]
    progress = {"stage": "accepted", "handler": "浦东供电服务中心"}

    as_beta = {
        "read": await api.get(f"/api/v1/applications/{app_id}", headers=auth("beta")),
        "events": await api.get(f"/api/v1/applications/{app_id}/events", headers=auth("beta")),
        "progress": await api.post(
            f"/api/v1/applications/{app_id}/progress", json=progress, headers=auth("beta")
        ),
        "permit": await api.post(
            f"/api/v1/applications/{app_id}/permits", json=WORKS, headers=auth("beta")
        ),
        "read permit": await api.get(f"/api/v1/permits/{permit_id}", headers=auth("beta")),
    }
    nowhere = await api.get(f"/api/v1/applications/{a_uuid()}", headers=auth("beta"))
    for what, response in as_beta.items():
        assert response.status_code == 404, (what, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        # As if it did not exist: the same problem as an id nobody has.
        assert response.json()["type"] == nowhere.json()["type"]
        assert response.json()["title"] == nowhere.json()["title"]

    assert (await api.get(f"/api/v1/applications/{app_id}", headers=auth("alpha"))).is_success
    assert (await api.get(f"/api/v1/permits/{permit_id}", headers=auth("alpha"))).is_success
    seen_by_all = await api.get(f"/api/v1/applications/{app_id}", headers=auth("auditor"))
    assert seen_by_all.status_code == 200

    refused = await api.post(
        "/api/v1/applications", json=low_voltage(JINGAN), headers=auth("reader")
    )
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"] == "/problems/forbidden"

    async with connector.sessions() as session:
        owners = (await session.execute(select(Application.id, Application.owner))).all()
        permits = await session.scalar(select(func.count()).select_from(Permit))
    assert owners == [(app_id, "alpha")]  # beta's and reader's attempts stored nothing
    assert permits == 1


async def test_cases_from_ywtb_belong_to_the_platform_and_clients_with_all(
    api: httpx.AsyncClient, connector: Container, settings: Settings
) -> None:
    raw = json.dumps(callback_body(a_case("SH-OWNER-0001")), ensure_ascii=False).encode()
    path = "/callbacks/ywtb/cases"
    signed = sign_request(
        "POST",
        path,
        raw,
        app_id=settings.ywtb.callback_app_id,
        secret=settings.ywtb.callback_key.get_secret_value(),
    )
    response = await api.post(
        path, content=raw, headers={**signed, "Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    app_id = response.json()["application_id"]

    assert (
        await api.get(f"/api/v1/applications/{app_id}", headers=auth("alpha"))
    ).status_code == 404
    assert (await api.get(f"/api/v1/applications/{app_id}", headers=auth("auditor"))).is_success
    async with connector.sessions() as session:
        assert (await session.get(Application, app_id)).owner == "ywtb"  # type: ignore[union-attr]


async def test_a_client_removed_from_the_settings_is_401_after_a_restart(
    settings: Settings, platforms: dict[str, Platform], http: httpx.AsyncClient
) -> None:
    probe = f"/api/v1/applications/{a_uuid()}"
    async for url in served(settings):
        assert (await http.get(url + probe, headers=auth("beta"))).status_code == 404
        # The second key of a client works too (rotation).
        rotated = {"Authorization": f"Bearer {KEYS['beta']}-next"}
        assert (await http.get(url + probe, headers=rotated)).status_code == 404

    settings.security.clients = clients("alpha")
    async for url in served(settings):
        gone = await http.get(url + probe, headers=auth("beta"))
        assert gone.status_code == 401
        assert gone.headers["content-type"] == "application/problem+json"
        assert (await http.get(url + probe, headers=auth("alpha"))).status_code == 404


async def test_the_sandbox_key_is_401_in_production_on_a_store_a_sandbox_used(
    settings: Settings, platforms: dict[str, Platform], http: httpx.AsyncClient
) -> None:
    sandbox = {"Authorization": "Bearer sandbox-key"}
    async for url in served(settings):
        created = await http.post(
            url + "/api/v1/applications", json=low_voltage(JINGAN), headers=sandbox
        )
        assert created.status_code == 201, created.text
        app_id = created.json()["id"]

    production = settings.model_copy(deep=True)
    production.environment = "production"
    production.licence.password = SecretStr("licence-password")
    production.project.app_secret = SecretStr("project-app-secret")
    async for url in served(production):
        refused = await http.get(url + f"/api/v1/applications/{app_id}", headers=sandbox)
        assert refused.status_code == 401
        assert refused.json()["type"] == "/problems/bad_credentials"
        posted = await http.post(
            url + "/api/v1/applications", json=low_voltage(JINGAN), headers=sandbox
        )
        assert posted.status_code == 401
        # The docs and the readiness detail are not public in production.
        assert (await http.get(url + "/openapi.json")).status_code == 401
        assert (await http.get(url + "/openapi.json", headers=auth("alpha"))).status_code == 200
        ready = (await http.get(url + "/readyz")).json()
        assert "checks" not in ready and ready["status"] in ("ready", "not_ready")


# --- limits ---------------------------------------------------------------------

MB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def serve_process(settings: Settings, port: int, output: Path) -> subprocess.Popen[bytes]:
    """``ywtb serve`` as its own process, as ops would run it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("YWTB_")}
    with output.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)],
            env={**env, **settings_env(settings)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def _chunks(total: int, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        chunk = b" " * min(size, total - sent)
        sent += len(chunk)
        yield chunk


async def test_20_mb_bodies_are_413_while_the_server_grows_by_less_than_30_mb(
    settings: Settings, platforms: dict[str, Platform], http: httpx.AsyncClient, tmp_path: Path
) -> None:
    port = free_port()
    server = serve_process(settings, port, tmp_path / "serve.log")
    url = f"http://127.0.0.1:{port}"
    try:
        async with asyncio.timeout(30):
            while True:
                try:
                    if (await http.get(url + "/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        json_type = {"Content-Type": "application/json"}
        targets = {
            "applications": ("/api/v1/applications", {**auth("alpha"), **json_type}),
            "callback": ("/callbacks/permits", json_type),
        }
        # Warm up every path once (imports, first allocations) before the baseline.
        for path, headers in targets.values():
            await http.post(url + path, content=b"{}", headers=headers)
        before = rss_bytes(server.pid)
        twenty = 20 * MB
        answers: dict[str, int] = {}
        for name, (path, headers) in targets.items():
            declared = await http.post(url + path, content=b" " * twenty, headers=headers)
            streamed = await http.post(url + path, content=_chunks(twenty), headers=headers)
            for how, response in (("content-length", declared), ("chunked", streamed)):
                answers[f"{name} {how}"] = response.status_code
                assert response.headers["content-type"] == "application/problem+json"
                assert response.json()["type"] == "/problems/payload_too_large"
        after = rss_bytes(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=15)
    assert set(answers.values()) == {413}, answers
    growth = after - before
    log.info("RSS %.1f MB before, %.1f MB after: %.1f MB", before / MB, after / MB, growth / MB)
    assert growth < 30 * MB, f"RSS grew by {growth / MB:.1f} MB"


async def test_a_client_over_its_rate_gets_429_with_retry_after(api: httpx.AsyncClient) -> None:
    probe = f"/api/v1/applications/{a_uuid()}"
    statuses = []
    for _ in range(6):
        response = await api.get(probe, headers=auth("slow"))
        statuses.append(response.status_code)
        if response.status_code == 429:
            limited = response
    assert statuses[0] == 404 and 429 in statuses, statuses
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["content-type"] == "application/problem+json"
    assert limited.json()["type"] == "/problems/rate_limited"
    # Another client is not slowed by it.
    assert (await api.get(probe, headers=auth("alpha"))).status_code == 404


async def test_repeated_failed_authentication_from_one_peer_is_refused_for_a_while(
    settings: Settings, platforms: dict[str, Platform], http: httpx.AsyncClient
) -> None:
    settings.limits = LimitsSettings(auth_failures=5, auth_failure_window_s=60)
    probe = f"/api/v1/applications/{a_uuid()}"
    async for url in served(settings):
        guesses = [
            (
                await http.get(url + probe, headers={"Authorization": f"Bearer guess-{n}"})
            ).status_code
            for n in range(8)
        ]
        assert guesses == [401] * 5 + [429] * 3
        # The right key is refused too while the peer is locked out: guessing learns nothing.
        locked = await http.get(url + probe, headers=auth("alpha"))
        assert locked.status_code == 429 and int(locked.headers["retry-after"]) >= 1


async def test_callbacks_of_a_platform_over_its_rate_get_429(
    settings: Settings, platforms: dict[str, Platform], http: httpx.AsyncClient
) -> None:
    settings.limits = LimitsSettings(callback_rate_per_s=1)
    async for url in served(settings):
        statuses = [
            (await http.post(url + "/callbacks/permits", json={})).status_code for _ in range(3)
        ]
    assert statuses[0] == 401 and statuses[-1] == 429, statuses


async def test_slow_headers_and_slow_bodies_are_cut(
    settings: Settings, platforms: dict[str, Platform]
) -> None:
    settings.limits = LimitsSettings(header_read_timeout_s=0.5, body_read_timeout_s=0.5)
    port = free_port()
    server = api_server(create_app(settings), "127.0.0.1", port, settings.limits)
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.02)

        async def closed_after(request: bytes) -> tuple[float, bytes]:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            started = time.monotonic()
            writer.write(request)
            await writer.drain()
            async with asyncio.timeout(5):
                answer = await reader.read()  # until the server closes
            writer.close()
            return time.monotonic() - started, answer

        trickled, nothing = await closed_after(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        assert trickled < 2 and nothing == b""
        body_late, answer = await closed_after(
            b"POST /api/v1/applications HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + KEYS["alpha"].encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
        )
        assert body_late < 2
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    finally:
        server.should_exit = True
        await serving


# --- strict input -----------------------------------------------------------------


async def test_types_are_not_coerced_and_text_refuses_control_characters(
    api: httpx.AsyncClient, connector: Container
) -> None:
    def with_request(**changes: Any) -> dict[str, Any]:
        payload = low_voltage(JINGAN)
        payload["request"] = {**payload["request"], **changes}
        return payload

    address = low_voltage(JINGAN)
    address["site"]["address"] = "上海市静安区\x00南京西路"
    cases = {
        "request.capacity_kva": [with_request(capacity_kva=True), with_request(capacity_kva="100")],
        "site.address": [address],
    }
    for field, payloads in cases.items():
        for payload in payloads:
            response = await api.post("/api/v1/applications", json=payload)
            assert response.status_code == 422, response.text
            assert field in [e["field"] for e in response.json()["errors"]], response.json()
    progress = await api.post(
        f"/api/v1/applications/{a_uuid()}/progress", json={"stage": "accepted", "handler": "x\ny"}
    )
    assert progress.status_code == 422

    async with connector.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Application)) == 0


async def test_http_semantics_415_405_with_allow_and_head(api: httpx.AsyncClient) -> None:
    form = await api.post(
        "/api/v1/applications",
        content=json.dumps(body()).encode(),
        headers={"Content-Type": "text/plain"},
    )
    assert form.status_code == 415
    assert form.headers["content-type"] == "application/problem+json"

    wrong = await api.delete(f"/api/v1/applications/{a_uuid()}")
    assert wrong.status_code == 405
    assert set(wrong.headers["allow"].replace(" ", "").split(",")) >= {"GET", "HEAD"}
    assert wrong.headers["content-type"] == "application/problem+json"

    get = await api.get("/healthz")
    head = await api.head("/healthz")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]


async def test_a_signed_callback_too_deep_or_too_long_is_422_before_its_nonce_is_spent(
    api: httpx.AsyncClient, connector: Container, settings: Settings
) -> None:
    path = "/callbacks/ywtb/cases"
    secret = settings.ywtb.callback_key.get_secret_value()
    app_id = settings.ywtb.callback_app_id
    deep = b'{"BJBH": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    signed = sign_request("POST", path, deep, app_id=app_id, secret=secret)
    refused = await api.post(
        path, content=deep, headers={**signed, "Content-Type": "application/json"}
    )
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    async with connector.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Nonce)) == 0

    long_case = callback_body(a_case("SH-LONG-0001"))
    long_case["BJBH"] = "SH" + "9" * 10_000
    raw = json.dumps(long_case, ensure_ascii=False).encode()
    signed = sign_request("POST", path, raw, app_id=app_id, secret=secret)
    too_long = await api.post(
        path, content=raw, headers={**signed, "Content-Type": "application/json"}
    )
    assert too_long.status_code == 422, too_long.text
    nul = callback_body(a_case("SH-NUL-0001"))
    nul["YDDZ"] = "上海市\x00静安区"
    raw = json.dumps(nul, ensure_ascii=False).encode()
    signed = sign_request("POST", path, raw, app_id=app_id, secret=secret)
    with_nul = await api.post(
        path, content=raw, headers={**signed, "Content-Type": "application/json"}
    )
    assert with_nul.status_code == 422, with_nul.text
    async with connector.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Application)) == 0
