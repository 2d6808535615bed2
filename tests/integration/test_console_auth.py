"""Signing in to the console: the key never in the cookie, the cookie strict, forms tokened."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select

from adapters.simulation import ServedApp
from gateway.api.app import create_app
from gateway.bootstrap import Container
from gateway.console.session import COOKIE
from gateway.store.db import transaction
from gateway.store.models import Application, ApplicationEvidence, DeadLetterReplay, utcnow


@pytest.fixture
async def console(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    """The app served with its own container (its loop is the server's); ``container`` reads."""
    with ServedApp(create_app(container.settings)) as served:
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
            yield client


async def sign_in(console: httpx.AsyncClient, **headers: str) -> httpx.Response:
    return await console.post(
        "/ops/login",
        content="api_key=sandbox-key&next=%2Fops%2Fdead-letters",
        headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
    )


async def test_the_console_asks_for_a_key_and_keeps_only_a_signed_strict_cookie(
    console: httpx.AsyncClient, container: Container
) -> None:
    anonymous = await console.get("/ops/dead-letters?worker=marketing")
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/ops/login?next=/ops/dead-letters%3Fworker%3Dmarketing"

    wrong = await console.post(
        "/ops/login",
        content="api_key=not-a-key",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert wrong.status_code == 401
    assert "not valid" in wrong.text
    assert COOKIE not in wrong.cookies

    signed = await sign_in(console)
    assert signed.status_code == 303
    assert signed.headers["location"] == "/ops/dead-letters"
    set_cookie = signed.headers["set-cookie"]
    assert (
        "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie and "Path=/ops" in set_cookie
    )
    assert "Secure" not in set_cookie  # plain http on loopback
    assert "sandbox-key" not in set_cookie

    page = await console.get("/ops/dead-letters")
    assert page.status_code == 200
    assert "Dead letters" in page.text

    tampered = console.cookies[COOKIE][:-2] + "00"
    console.cookies.set(COOKIE, tampered, path="/ops")
    assert (await console.get("/ops")).status_code == 303

    over_https = await sign_in(console, **{"X-Forwarded-Proto": "https"})
    assert "Secure" in over_https.headers["set-cookie"]


async def test_a_replay_without_the_form_token_is_refused_and_nothing_is_recorded(
    console: httpx.AsyncClient, container: Container
) -> None:
    await sign_in(console)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for path in ("/ops/dead-letters/preview", "/ops/dead-letters/replay"):
        refused = await console.post(path, content="event_ids=e1&confirm=yes", headers=form)
        assert refused.status_code == 401, path
        assert "did not come from the console" in refused.text
        forged = await console.post(
            path, content="event_ids=e1&confirm=yes&csrf=0123", headers=form
        )
        assert forged.status_code == 401, path
    async with container.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(DeadLetterReplay)) == 0

    page = await console.get("/ops/dead-letters")
    token = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    unconfirmed = await console.post(
        "/ops/dead-letters/replay", content=f"event_ids=e1&csrf={token}", headers=form
    )
    assert unconfirmed.status_code == 422
    previewed = await console.post(
        "/ops/dead-letters/preview", content=f"event_ids=e1&csrf={token}", headers=form
    )
    assert previewed.status_code == 200
    assert "not_found" in previewed.text

    out = await console.post("/ops/logout", content=f"csrf={token}", headers=form)
    assert out.status_code == 303
    assert (await console.get("/ops")).status_code == 303


async def test_a_bearer_key_opens_the_console_too(
    console: httpx.AsyncClient, container: Container
) -> None:
    two_hours_ago = utcnow() - timedelta(hours=2)
    async with transaction(container.sessions) as session:
        session.add(
            Application(
                id="app-stuck-1",
                status="evidence_pending",
                credential_type="uscc",
                credential_no="91310106MA1FP5221E",
                request={},
                procedures=[],
                time_limit_days=10,
                reasons=[],
                created_at=two_hours_ago,
                updated_at=two_hours_ago,
                received_at=two_hours_ago,
                owner="sandbox",
            )
        )
        session.add(
            ApplicationEvidence(
                application_id="app-stuck-1",
                kind="licence",
                subject="91310106MA1FP5221E",
                status="pending",
                evidence_id=None,
                updated_at=two_hours_ago,
            )
        )
    bearer = {"Authorization": "Bearer sandbox-key"}
    overview = await console.get("/ops", headers=bearer)
    assert overview.status_code == 200
    assert "Platforms" in overview.text and "Outbox" in overview.text
    stuck = overview.text.split('id="stuck"', 1)[1]
    assert "app-stuck-1" in stuck and "licence" in stuck
    assert "1 application(s) waiting for evidence" in overview.text
    assert (await console.get("/ops", headers={"Authorization": "Bearer wrong"})).status_code == 303
    missing = await console.get("/ops/search", params={"q": "SH-NO-SUCH-CASE"}, headers=bearer)
    assert missing.status_code == 404
    assert "SH-NO-SUCH-CASE" in missing.text
    css = await console.get("/ops/static/console.css")
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]


async def test_the_ops_api_answers_bad_replay_requests_with_problems(
    console: httpx.AsyncClient, container: Container
) -> None:
    bearer = {"Authorization": "Bearer sandbox-key"}
    too_many = [f"event-{n}" for n in range(container.settings.dlq.max_batch + 1)]
    refused = await console.post(
        "/api/v1/ops/dead-letters/replay",
        json={"event_ids": too_many, "dry_run": True},
        headers=bearer,
    )
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["errors"] == [
        {
            "field": "event_ids",
            "reason": f"at most {container.settings.dlq.max_batch} event ids per replay",
        }
    ]
    unauthenticated = await console.post(
        "/api/v1/ops/dead-letters/replay", json={"event_ids": ["e1"], "dry_run": True}
    )
    assert unauthenticated.status_code == 401
    async with container.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(DeadLetterReplay)) == 0
    empty = await console.get("/api/v1/ops/dead-letters", headers=bearer)
    assert empty.json() == {"items": [], "count": 0}
