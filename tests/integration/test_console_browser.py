"""The ops console and /docs in a real browser: headless Chromium driven by Playwright.

Chromium is Debian's (``ops/install-tools.sh`` installs it when missing).
Screenshots of each step are kept under ``var/artifacts/`` (git-ignored).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Browser, Page, Route, async_playwright, expect
from sqlalchemy import select

from adapters.simulation import ServedApp
from gateway.api.app import create_app
from gateway.bootstrap import Container
from gateway.settings import Settings
from gateway.store.models import DeadLetterReplay, DeadLetterReplayItem, Delivery
from tests.integration.conftest import Platform
from tests.integration.test_async_flows import a_case, application_of, file_case
from tests.running import eventually, running

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "artifacts"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: run ops/install-tools.sh (installs Debian's chromium)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


def artifacts(request: pytest.FixtureRequest) -> Path:
    """Where this test's screenshots go: var/artifacts/<test name>/."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    folder = ARTIFACTS / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def loopback_only(page: Page) -> list[str]:
    """Abort every request to a host other than 127.0.0.1; return the list of those refused."""
    refused: list[str] = []

    async def guard(route: Route) -> None:
        url = route.request.url
        if url.startswith(("data:", "blob:", "about:")) or urlsplit(url).hostname == "127.0.0.1":
            await route.continue_()
        else:
            refused.append(url)
            await route.abort()

    await page.route("**/*", guard)
    return refused


async def test_a_dead_letter_is_listed_previewed_replayed_in_bulk_and_arrives(
    api: httpx.AsyncClient,
    connector: Container,
    platforms: dict[str, Platform],
    settings: Settings,
    api_port: int,
    browser: Browser,
    request: pytest.FixtureRequest,
) -> None:
    shots = artifacts(request)
    marketing = platforms["marketing"]
    await marketing.admin("PUT", "reject", ["case_received"])  # refused for good: JG 2
    cases = [a_case("SH2026112600901"), a_case("SH2026112600902")]
    for case in cases:
        await file_case(platforms, settings, api_port, case)
    applications = [await application_of(connector, case.case_no) for case in cases]

    async def dead_deliveries() -> list[Delivery]:
        async with connector.sessions() as session:
            rows = await session.scalars(
                select(Delivery).where(
                    Delivery.worker == "marketing", Delivery.application_id.in_(applications)
                )
            )
            return [row for row in rows if row.status == "dead"]

    async def both_dead() -> bool:
        return len(await dead_deliveries()) == 2

    async with running(connector, "marketing", "timeline"):
        await eventually(both_dead)
        event_ids = sorted(row.event_id for row in await dead_deliveries())
        resource = (await api.get(f"/api/v1/applications/{applications[0]}")).json()
        assert "jobs" in resource, resource
        assert [(j["worker"], j["status"]) for j in resource["jobs"]] == [("marketing", "dead")]
        assert "拒收" in resource["jobs"][0]["last_error"]
        assert (await marketing.admin("GET", "notices")).json()["notices"] == []

        await marketing.admin("DELETE", "reject")  # the marketing system is fixed

        context = await browser.new_context(viewport={"width": 1400, "height": 900})
        page = await context.new_page()
        refused = await loopback_only(page)
        base = str(api.base_url).rstrip("/")

        await page.goto(f"{base}/ops/dead-letters")
        await expect(page).to_have_url(re.compile(r"/ops/login\?next="))
        await page.fill("input[name=api_key]", "sandbox-key")
        await page.screenshot(path=shots / "1-login.png", full_page=True)
        await page.click("form.login button[type=submit]")
        await expect(page).to_have_url(re.compile(r"/ops/dead-letters$"))
        cookie = next(c for c in await context.cookies() if c["name"] == "ywtb_ops_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert "sandbox-key" not in cookie["value"]

        await page.goto(f"{base}/ops")
        await expect(page.locator("#dead-per-topic")).to_contain_text("ywtb.case.events")
        await expect(page.locator("#dead-per-topic tbody tr").first).to_contain_text("2")
        await expect(page.locator("#breakers")).to_contain_text("marketing")
        await expect(page.locator("#lag-totals")).to_contain_text("marketing")
        await page.screenshot(path=shots / "2-overview.png", full_page=True)

        await page.goto(f"{base}/ops/dead-letters")
        await page.select_option("select[name=worker]", "marketing")
        await page.click("form.filters button[type=submit]")
        rows = page.locator("#letters tbody tr")
        await expect(rows).to_have_count(2)
        for event_id in event_ids:
            row = page.locator(f"#letters tr[data-event-id='{event_id}']")
            await expect(row).to_contain_text("拒收")
            await expect(row).to_contain_text("ywtb.case.events")
        await page.screenshot(path=shots / "3-dead-letters.png", full_page=True)

        await page.click(f"#letters tr[data-event-id='{event_ids[0]}'] td.err a")
        await expect(page.locator("#event-id")).to_have_text(event_ids[0])
        await expect(page.locator("#history")).to_contain_text("拒收")
        await expect(page.locator("#headers")).to_contain_text("ce_type")
        await expect(page.locator("#payload")).to_contain_text("SH20261126009")
        await page.screenshot(path=shots / "3b-dead-letter.png", full_page=True)
        await page.click("dl.facts a")  # the application, as the clerk sees it: why it is stuck
        await expect(page.locator("#jobs tr.delivery-dead")).to_contain_text("拒收")
        await expect(page.locator("#timeline")).to_contain_text("marketing: dead")
        await page.screenshot(path=shots / "3c-application-dead-job.png", full_page=True)
        await page.goto(f"{base}/ops/dead-letters?worker=marketing")

        for event_id in event_ids:
            await page.check(f"input[name=event_ids][value='{event_id}']")
        await page.click("#preview")
        await expect(page.locator("h1")).to_have_text("Replay preview (dry run)")
        plan = page.locator("#plan tbody tr")
        await expect(plan).to_have_count(2)
        for n in range(2):
            await expect(plan.nth(n)).to_contain_text("ywtb.case.events.retry")
            await expect(plan.nth(n)).to_contain_text("would_send")
            await expect(plan.nth(n)).to_contain_text("marketing")
        await page.screenshot(path=shots / "4-preview.png", full_page=True)
        assert (await marketing.admin("GET", "notices")).json()["notices"] == [], "a dry run"

        await page.check("form.confirm input[name=confirm]")
        await page.screenshot(path=shots / "5-confirm.png", full_page=True)
        await page.click("#confirm-replay")
        await expect(page.locator("#replay-summary")).to_contain_text("2 sent")
        await page.screenshot(path=shots / "6-replayed.png", full_page=True)

        async def arrived() -> bool:
            notices = (await marketing.admin("GET", "notices")).json()["notices"]
            return sorted(n["TZID"] for n in notices) == event_ids

        await eventually(arrived)

        async def delivered() -> bool:
            async with connector.sessions() as session:
                rows = await session.scalars(
                    select(Delivery.status).where(Delivery.event_id.in_(event_ids))
                )
                return sorted(rows) == ["delivered", "delivered"]

        await eventually(delivered)
        await page.fill("header input[name=q]", cases[0].case_no)
        await page.click("header .search button")
        await expect(page.locator("#application-id")).to_have_text(applications[0])
        await expect(page.locator("#timeline")).to_contain_text("marketing: delivered")
        await page.screenshot(path=shots / "7-application.png", full_page=True)

        await page.goto(f"{base}/ops/dead-letters?worker=marketing")
        await expect(page.locator("#letters tbody tr")).to_have_count(0)
        await page.screenshot(path=shots / "8-nothing-dead.png", full_page=True)
        await context.close()
        assert refused == []

    notices = (await marketing.admin("GET", "notices")).json()
    assert sorted(n["TZID"] for n in notices["notices"]) == event_ids
    assert sorted(n["SQBH"] for n in notices["notices"]) == sorted(applications)
    async with connector.sessions() as session:
        replays = (await session.scalars(select(DeadLetterReplay))).all()
        items = (await session.scalars(select(DeadLetterReplayItem))).all()
    assert [(r.actor, r.dry_run) for r in replays] == [("sandbox", True), ("sandbox", False)]
    by_replay = {
        r.dry_run: sorted((i.event_id, i.worker, i.outcome) for i in items if i.replay_id == r.id)
        for r in replays
    }
    assert by_replay[True] == [(e, "marketing", "would_send") for e in event_ids]
    assert by_replay[False] == [(e, "marketing", "sent") for e in event_ids]


async def test_docs_render_with_every_non_loopback_request_blocked(
    settings: Settings, browser: Browser, request: pytest.FixtureRequest
) -> None:
    shots = artifacts(request)
    with ServedApp(create_app(settings)) as served:
        page = await browser.new_page()
        refused = await loopback_only(page)
        await page.goto(f"{served.url}/docs")
        await expect(page.locator(".swagger-ui .info .title")).to_contain_text(
            "ywtb-connector", timeout=15_000
        )
        await expect(page.locator(".opblock-summary-path").first).to_be_visible()
        await expect(
            page.locator(".opblock-summary-path[data-path='/api/v1/applications']").first
        ).to_be_visible()
        await page.screenshot(path=shots / "docs.png", full_page=False)
        await page.close()
    assert refused == [], "/docs tried to leave the machine"
