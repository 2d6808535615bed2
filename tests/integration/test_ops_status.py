"""``ywtb ops status``: the figures on one screen, as ops would run it (its own process)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import httpx
import pytest

from gateway.bootstrap import Container
from gateway.outbox import backlog
from gateway.settings import Settings
from tests.integration.test_applications import JINGAN, low_voltage
from tests.integration.test_metrics import application_events
from tests.running import eventually, running, settings_env


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.metrics.interval_s = 0.2  # the API gathers its figures continuously
    return settings


async def ywtb(
    settings: Settings, *args: str, stop_after_s: float | None = None
) -> tuple[int, str]:
    """Run ``ywtb ARGS`` with the test's settings; return its exit code and output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("YWTB_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        *args,
        env={**env, **settings_env(settings), "YWTB_LOG_LEVEL": "WARNING"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    if stop_after_s is not None:
        await asyncio.sleep(stop_after_s)
        process.send_signal(signal.SIGINT)  # Ctrl-C
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    assert b"Traceback" not in err, err.decode()
    return process.returncode, out.decode()


async def submitted_and_published(api: httpx.AsyncClient, connector: Container) -> None:
    response = await api.post("/api/v1/applications", json=low_voltage(JINGAN))
    assert response.status_code == 201, response.text
    async with running(connector):

        async def published() -> bool:
            async with connector.sessions() as session:
                return (await backlog(session))[0] == 0

        await eventually(published)


async def test_status_shows_backlog_applications_and_lag_from_store_and_kafka(
    api: httpx.AsyncClient, connector: Container, settings: Settings
) -> None:
    await submitted_and_published(api, connector)

    code, screen = await ywtb(settings, "ops", "status")

    assert code == 0
    lines = screen.splitlines()
    assert "OUTBOX        0 pending, oldest 0 s" in lines
    assert "APPLICATIONS  evidence_pending 0  ready 1  rejected 0" in lines
    timeline = next(line.split() for line in lines if line.startswith("  ywtb.worker.timeline "))
    assert timeline[1] == str(await application_events(connector)), screen  # nothing consumed
    assert "DEAD LETTERS (messages on the .dlq topics; replay with `ywtb dlq` or /ops)" in lines
    assert "add --url to see them" in screen


async def test_status_with_url_adds_the_api_processs_breakers_and_loops(
    api: httpx.AsyncClient, connector: Container, settings: Settings
) -> None:
    await submitted_and_published(api, connector)

    async def gathered_after_the_submit() -> bool:
        # A round of the API's figures that began before the submit may still be the latest.
        text = (await api.get("/metrics")).text
        return 'ywtb_applications{status="ready"} 1.0' in text

    await eventually(gathered_after_the_submit)
    code, screen = await ywtb(settings, "ops", "status", "--url", str(api.base_url))

    assert code == 0, screen
    rows = {line.split()[0]: line.split() for line in screen.splitlines() if line.startswith("  ")}
    assert rows["licence"][:2] == ["licence", "closed"], screen
    assert int(rows["licence"][2]) >= 1, "the licence was fetched (calls counted since start)"
    assert rows["ops-figures"][1] == "yes"
    assert "APPLICATIONS  evidence_pending 0  ready 1  rejected 0" in screen, screen

    refused, _ = await ywtb(settings, "ops", "status", "--url", str(api.base_url), "--key", "no")
    assert refused == 1


async def test_watch_redraws_until_interrupted(settings: Settings, container: Container) -> None:
    code, screens = await ywtb(settings, "ops", "status", "--watch", "0.2", stop_after_s=4.0)

    assert code == 0
    assert screens.count("ywtb ops status — ") >= 2
