"""The store is the source of truth for unfinished work: the sweeper finishes what the
workers' retries could not, once, whatever the length of the outage."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from sqlalchemy import select

from adapters.licence.mapping import OPERATION as QUERY_LICENCE
from gateway.bootstrap import Container, bootstrap
from gateway.dlq import read_dead_letters
from gateway.lag import worker_lag
from gateway.settings import Settings, SweeperSettings
from gateway.store.models import Delivery, Permit, SweepItem
from gateway.supervise import supervise
from gateway.sweeper import Sweeper, sweeper
from schemas.errors import PlatformUnavailable
from schemas.events import APPLICATION_EVENTS
from tests.integration.conftest import Platform
from tests.integration.test_applications import JINGAN, LINGANG, REVOKED, body, count, low_voltage
from tests.integration.test_async_flows import (
    WORKS,
    a_case,
    application_of,
    dlq_replay,
    file_case,
    pushes,
)
from tests.running import eventually, running

QINGPU = "91310118MA1K4A7275"  # active (在业)
CHANGNING = "92310105MA1L2W778L"  # individual business, 在业
CHONGMING = "93310151MA1G9N531G"  # farmers' cooperative, 存续


def short_budgets(settings: Settings, connector: Container) -> None:
    """A retry budget of about two seconds, and a sweeper that waits one second for it."""
    settings.worker.in_place_attempts = 2
    settings.worker.in_place_backoff_max_s = 0.2
    settings.worker.retry_delays_s = [0.3, 0.3]
    settings.licence.attempts = 1
    settings.sweeper = SweeperSettings(
        interval_s=0.3, grace_s=1.0, lease_s=10, backoff_initial_s=0.2, backoff_max_s=1.0
    )
    for breaker in connector.breakers.values():
        breaker.reset_timeout_s = 0.5


@asynccontextmanager
async def sweeping(container: Container) -> AsyncIterator[None]:
    """The sweeper as the processes run it: a supervised periodic job."""
    stop = asyncio.Event()
    task = asyncio.create_task(supervise("sweeper", sweeper(container), stop, container.loops))
    try:
        yield
    finally:
        stop.set()
        await task


async def status_of(api: httpx.AsyncClient, application_id: str) -> str:
    status: str = (await api.get(f"/api/v1/applications/{application_id}")).json()["status"]
    return status


async def test_a_licence_outage_longer_than_every_retry_ends_with_every_application_decided(
    api: httpx.AsyncClient,
    connector: Container,
    platforms: dict[str, Platform],
    settings: Settings,
) -> None:
    short_budgets(settings, connector)
    licence = platforms["licence"].control
    licence.faults.down = True
    credentials = [JINGAN, QINGPU, CHANGNING, CHONGMING, REVOKED]

    async with running(connector, "evidence"), sweeping(connector):
        submitted = [
            (await api.post("/api/v1/applications", json=low_voltage(c))).json()
            for c in credentials
        ]
        assert [a["status"] for a in submitted] == ["evidence_pending"] * len(credentials)

        async def retries_exhausted() -> bool:
            """Every message went through every retry round, and the worker committed them all."""
            lag = await worker_lag(settings.kafka, {"evidence": (APPLICATION_EVENTS,)})
            retried = sum(r["end"] or 0 for r in lag if r["topic"].endswith(".retry"))
            rounds = len(settings.worker.retry_delays_s)
            return retried >= rounds * len(credentials) and all(r["lag"] == 0 for r in lag)

        await eventually(retries_exhausted, timeout_s=60)
        await asyncio.sleep(2)  # the outage outlasts the retry budget by more than the grace
        statuses = [await status_of(api, a["id"]) for a in submitted]
        assert statuses == ["evidence_pending"] * len(credentials), "nothing got through"
        assert licence.calls[QUERY_LICENCE] == 0

        licence.faults.down = False

        async def all_decided() -> bool:
            statuses = [await status_of(api, a["id"]) for a in submitted]
            return all(s in ("ready", "rejected") for s in statuses)

        await eventually(all_decided, timeout_s=60)

    final = {c: await status_of(api, a["id"]) for c, a in zip(credentials, submitted, strict=True)}
    assert final == {
        JINGAN: "ready",
        QINGPU: "ready",
        CHANGNING: "ready",
        CHONGMING: "ready",
        REVOKED: "rejected",
    }
    assert await read_dead_letters(settings.kafka) == [], "no dead letter for a transient outage"
    assert licence.calls[QUERY_LICENCE] == len(credentials), "each licence fetched once"
    assert await count(connector, SweepItem) == 0, "no open work left"


async def test_two_sweepers_at_once_drive_each_open_item_once(
    api: httpx.AsyncClient,
    connector: Container,
    platforms: dict[str, Platform],
    settings: Settings,
    api_port: int,
) -> None:
    short_budgets(settings, connector)
    settings.sweeper.grace_s = 0.5
    # The authority holds its decision back: the permit stays "filed" however long the sweeps take.
    await platforms["permit"].admin("PUT", "policy", {"policy": "approve", "decision_delay_s": 600})
    # Work left open while no worker runs: a permit requested, evidence pending, stages unpushed.
    ready = (await api.post("/api/v1/applications", json=body(LINGANG))).json()
    assert ready["status"] == "ready"
    permit = await api.post(f"/api/v1/applications/{ready['id']}/permits", json=WORKS)
    assert permit.status_code == 201
    platforms["licence"].control.faults.down = True
    pending = [
        (await api.post("/api/v1/applications", json=low_voltage(c))).json()
        for c in (QINGPU, CHANGNING, CHONGMING)
    ]
    case = a_case("SH2026112600300", credential=JINGAN)
    await file_case(platforms, settings, api_port, case)
    case_application = await application_of(connector, case.case_no)
    for stage in ("accepted", "metering_and_connection"):
        reported = await api.post(
            f"/api/v1/applications/{case_application}/progress",
            json={"stage": stage, "handler": "静安供电服务中心"},
        )
        assert reported.status_code == 201, reported.text
    await asyncio.sleep(settings.sweeper.grace_s)
    platforms["licence"].control.faults.down = False
    platforms["licence"].control.reset()
    # Each licence call takes a while, so that one sweeper cannot drive everything before
    # the other has read the open work: the two really overlap, whatever the machine's load.
    platforms["licence"].control.faults.latency_s = 0.2

    other = await bootstrap(settings)  # a second replica: its own pool, breakers and sweeper
    try:
        first, second = Sweeper(connector), Sweeper(other)
        driven = await asyncio.gather(first.sweep_once(), second.sweep_once())
        again = await asyncio.gather(first.sweep_once(), second.sweep_once())
    finally:
        await other.aclose()

    # 3 + 1 applications' evidence, 1 permit filing, 2 status pushes: 7 items, each once.
    assert sum(driven) == 7, driven
    assert min(driven) >= 1, f"both sweepers took a share: {driven}"
    assert again == [0, 0], "nothing left to drive"
    assert platforms["licence"].control.calls[QUERY_LICENCE] == 4
    assert platforms["permit"].control.calls["FilePermit"] == 1
    for application in [*pending, {"id": case_application}]:
        assert await status_of(api, application["id"]) == "ready"
    async with connector.sessions() as session:
        filed = await session.scalar(select(Permit.status))
        delivered = (await session.scalars(select(Delivery.status))).all()
    assert filed == "filed"
    assert list(delivered) == ["delivered", "delivered"]
    arrived: list[dict[str, Any]] = await pushes(platforms)
    assert [(p["BJBH"], p["XH"], p["ZTDM"]) for p in arrived] == [
        (case.case_no, 1, "01"),
        (case.case_no, 2, "03"),
    ]
    assert await count(connector, SweepItem) == 0


async def test_an_item_held_by_a_sweeper_that_died_is_driven_when_its_lease_ends(
    api: httpx.AsyncClient,
    connector: Container,
    platforms: dict[str, Platform],
    settings: Settings,
) -> None:
    short_budgets(settings, connector)
    settings.sweeper.grace_s = 0.2
    settings.sweeper.lease_s = 1.5
    platforms["licence"].control.faults.down = True
    application = (await api.post("/api/v1/applications", json=low_voltage(QINGPU))).json()
    platforms["licence"].control.faults.down = False
    await asyncio.sleep(settings.sweeper.grace_s)

    crashed, survivor = Sweeper(connector), Sweeper(connector)
    [item] = list(await crashed.open_work())
    await crashed.track(await crashed.open_work())
    assert await crashed.claim(item) == 0  # claimed; then its process died

    assert await survivor.sweep_once() == 0, "the lease keeps it from a second sweeper"
    assert await status_of(api, application["id"]) == "evidence_pending"
    await asyncio.sleep(settings.sweeper.lease_s)
    assert await survivor.sweep_once() == 1
    assert await status_of(api, application["id"]) == "ready"


async def test_a_push_the_sweeper_finds_rejected_for_good_is_a_dead_letter_ops_can_replay(
    api: httpx.AsyncClient,
    connector: Container,
    platforms: dict[str, Platform],
    settings: Settings,
    api_port: int,
) -> None:
    short_budgets(settings, connector)
    settings.sweeper.grace_s = 0.2
    case = a_case("SH2026112600400", credential=JINGAN)
    await file_case(platforms, settings, api_port, case)
    application_id = await application_of(connector, case.case_no)
    await platforms["ywtb"].admin("PUT", "reject", [case.case_no])
    reported = [
        (
            await api.post(
                f"/api/v1/applications/{application_id}/progress",
                json={"stage": stage, "handler": "静安供电服务中心"},
            )
        ).json()["event_id"]
        for stage in ("accepted", "metering_and_connection")
    ]
    await asyncio.sleep(settings.sweeper.grace_s)

    assert await Sweeper(connector).sweep_once() == 0  # no status worker runs: only the sweeper

    letters = {d.event_id: d for d in await read_dead_letters(settings.kafka)}
    assert set(letters) == set(reported)
    assert {d.worker for d in letters.values()} == {"ywtb-status"}
    assert "PlatformRejected" in letters[reported[0]].header("ywtb_error")
    async with connector.sessions() as session:
        states = dict((await session.execute(select(Delivery.event_id, Delivery.status))).all())
    assert states == dict.fromkeys(reported, "dead")
    assert await Sweeper(connector).sweep_once() == 0, "a dead item is left to ops"

    await platforms["ywtb"].admin("DELETE", "reject")
    async with running(connector, "ywtb-status"):
        assert await dlq_replay(settings, *reversed(reported)) == list(reversed(reported))

        async def both_delivered() -> bool:
            async with connector.sessions() as session:
                rows = (await session.scalars(select(Delivery.status))).all()
            return list(rows) == ["delivered", "delivered"]

        await eventually(both_delivered)
    assert [(p["XH"], p["SJID"]) for p in await pushes(platforms)] == [
        (1, reported[0]),
        (2, reported[1]),
    ]
    assert await Sweeper(connector).sweep_once() == 0
    assert await count(connector, SweepItem) == 0


async def test_work_of_a_platform_whose_breaker_is_open_waits_for_its_trial(
    api: httpx.AsyncClient,
    connector: Container,
    platforms: dict[str, Platform],
    settings: Settings,
) -> None:
    short_budgets(settings, connector)
    settings.sweeper.grace_s = 0.2
    licence = platforms["licence"].control
    licence.faults.down = True
    application = (await api.post("/api/v1/applications", json=low_voltage(CHANGNING))).json()
    breaker = connector.breakers["licence"]
    breaker.reset_timeout_s = 2.0
    for _ in range(breaker.failure_threshold):  # the licence library failed, as the workers saw
        with contextlib.suppress(PlatformUnavailable), breaker.guard():
            raise PlatformUnavailable("licence", "answered HTTP 503")
    licence.faults.down = False
    await asyncio.sleep(settings.sweeper.grace_s)
    sweep = Sweeper(connector)

    assert await sweep.sweep_once() == 0
    assert licence.calls[QUERY_LICENCE] == 0, "no call while the breaker is open"
    async with connector.sessions() as session:
        assert await session.scalar(select(SweepItem.attempts)) == 0, "and no attempt counted"

    await asyncio.sleep(breaker.reset_timeout_s)  # half-open: the sweep is the trial
    assert await sweep.sweep_once() == 1
    assert licence.calls[QUERY_LICENCE] == 1
    assert await status_of(api, application["id"]) == "ready"
    assert breaker.state.value == "closed"
