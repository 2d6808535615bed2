"""Under load and with the store away: answers stay quick, honest and retryable.

``ywtb serve`` and ``ywtb relay`` run as separate processes on PostgreSQL, as
in production; 256 clients post applications at once for
``YWTB_TEST_LOAD_SECONDS`` (60 by default; ``YWTB_TEST_LOAD_CLIENTS`` changes
the 256). Every answer must be 2xx, or 503/429 with ``Retry-After``, none
slower than 5 s; ``/healthz`` answers throughout; the relay publishes every
event afterwards. With the store cut away (a TCP proxy in front of PostgreSQL,
never a restart of the shared server) or its pool exhausted, the API answers
503 with ``Retry-After`` at once, and recovers.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import ssl
import statistics
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from adapters.simulation import ServedApp
from gateway.api.app import create_app
from gateway.audit import AuditLog, Exchange
from gateway.bootstrap import Container
from gateway.devbroker import free_port
from gateway.settings import RelaySettings, Settings
from gateway.store.db import open_store
from gateway.store.models import AuditRecord, OutboxRow
from gateway.supervise import Loops
from schemas.errors import StoreUnavailable
from schemas.events import ApplicationEvent
from tests.integration.conftest import Platform
from tests.integration.test_applications import JINGAN, low_voltage
from tests.running import eventually, ywtb_process
from tests.tcpproxy import TcpProxy

pytestmark = pytest.mark.parametrize("store_settings", ["postgresql"], indirect=True)

CLIENTS = int(os.environ.get("YWTB_TEST_LOAD_CLIENTS", "256"))
SLOWEST_S = 5.0
AUTH = {"Authorization": "Bearer sandbox-key"}


def load_seconds() -> float:
    return float(os.environ.get("YWTB_TEST_LOAD_SECONDS", "60"))


@dataclass
class Stack:
    url: str
    log: Path
    serve: subprocess.Popen[bytes]
    relay: subprocess.Popen[bytes]


@pytest.fixture
def served(settings: Settings, platforms: dict[str, Platform], tmp_path: Path) -> Iterator[Stack]:
    """``ywtb serve`` and ``ywtb relay`` as their own processes, their output in one log."""
    port = free_port()
    log = tmp_path / "processes.log"
    settings.relay.poll_interval_s = RelaySettings().poll_interval_s  # as deployed
    processes = [
        ywtb_process(["serve", "--port", str(port)], settings, log),
        ywtb_process(["relay"], settings, log),
    ]
    try:
        yield Stack(f"http://127.0.0.1:{port}", log, *processes)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def until_up(url: str, log: Path) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=2) as client:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    pytest.fail(f"ywtb serve did not come up; see {log}")


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    slowest: dict[int, float] = field(default_factory=dict)  # per status
    bad: list[str] = field(default_factory=list)
    health_polls: int = 0
    health_failures: list[str] = field(default_factory=list)


async def client_loop(client: httpx.AsyncClient, until: float, tally: Tally) -> None:
    """One client: post applications back to back, waiting ``Retry-After`` when told to."""
    async with client:
        while time.monotonic() < until:
            started = time.monotonic()
            try:
                response = await client.post(
                    "/api/v1/applications",
                    json=low_voltage(JINGAN),
                    headers={"Idempotency-Key": uuid.uuid4().hex},
                )
            except httpx.HTTPError as exc:
                tally.bad.append(f"{type(exc).__name__} after {time.monotonic() - started:.1f} s")
                continue
            elapsed = time.monotonic() - started
            tally.latencies.append(elapsed)
            status = response.status_code
            tally.statuses[status] += 1
            tally.slowest[status] = max(elapsed, tally.slowest.get(status, 0.0))
            if 200 <= status < 300:
                continue
            retry_after = response.headers.get("Retry-After")
            if status in (429, 503) and retry_after is not None:
                assert response.headers["content-type"] == "application/problem+json"
                tally.problems[response.json()["type"]] += 1
                # As a well-behaved client does: wait as told, plus jitter.
                await asyncio.sleep(min(float(retry_after), 5.0) * random.uniform(1.0, 1.5))
                continue
            tally.bad.append(f"{status} (Retry-After {retry_after}): {response.text[:300]}")


async def health_loop(url: str, until: float, tally: Tally) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=SLOWEST_S) as client:
        while time.monotonic() < until:
            tally.health_polls += 1
            try:
                response = await client.get("/healthz")
                if response.status_code != 200:
                    tally.health_failures.append(f"HTTP {response.status_code}")
            except httpx.HTTPError as exc:
                tally.health_failures.append(type(exc).__name__)
            await asyncio.sleep(0.5)


async def lag_loop(until: float, lags: list[float]) -> None:
    """How late this process's own event loop wakes up (client-side delay in the figures)."""
    while time.monotonic() < until:
        started = time.monotonic()
        await asyncio.sleep(0.1)
        lags.append(time.monotonic() - started - 0.1)


async def count_outbox(connector: Container, **where: object) -> int:
    async with connector.sessions() as session:
        query = select(func.count()).select_from(OutboxRow).filter_by(**where)
        return int(await session.scalar(query) or 0)


def report(request: pytest.FixtureRequest, line: str) -> None:
    """Show the figures in pytest's output, captured or not."""
    terminal = request.config.pluginmanager.get_plugin("terminalreporter")
    if terminal is not None:
        terminal.write_line(line)


async def test_256_clients_get_quick_honest_answers_and_every_event_is_published(
    connector: Container, served: Stack, request: pytest.FixtureRequest
) -> None:
    url, log = served.url, served.log
    await until_up(url, log)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as client:
        warm = await client.get(f"/api/v1/evidence/licences/{JINGAN}")
        assert warm.status_code == 200, warm.text  # the licence is on file from now on

    seconds = load_seconds()
    tally = Tally()
    tls = ssl.create_default_context()  # one, not one per client: building it takes a while
    # Idle connections are dropped before the server's keep-alive timeout (5 s) closes them,
    # or a client waiting out a long Retry-After would race the server's close.
    limits = httpx.Limits(keepalive_expiry=3.0)
    clients = [
        httpx.AsyncClient(base_url=url, headers=AUTH, timeout=15, verify=tls, limits=limits)
        for _ in range(CLIENTS)
    ]
    until = time.monotonic() + seconds
    started = time.monotonic()
    lags: list[float] = []
    await asyncio.gather(
        health_loop(url, until, tally),
        lag_loop(until, lags),
        *(client_loop(client, until, tally) for client in clients),
    )
    took = time.monotonic() - started

    server_ms = sorted(
        entry["duration_ms"]
        for line in log.read_text().splitlines()
        if line.startswith("{")
        and (entry := json.loads(line)).get("path") == "/api/v1/applications"
        and "duration_ms" in entry
    )
    latencies = sorted(tally.latencies)
    requests = len(latencies)
    created = tally.statuses[201]
    ok = sum(n for status, n in tally.statuses.items() if 200 <= status < 300)
    p50 = statistics.median(latencies)
    p99 = latencies[min(requests - 1, int(requests * 0.99))]
    report(
        request,
        f"load: {CLIENTS} clients for {seconds:g} s ({took:.1f} s): {requests} requests, "
        f"{ok} 2xx ({created} created), {tally.statuses[503]} 503, {tally.statuses[429]} 429, "
        f"{requests / took:.0f} req/s; latency p50 {p50 * 1000:.0f} ms, "
        f"p99 {p99 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms; "
        f"/healthz {tally.health_polls} polls, {len(tally.health_failures)} failed; "
        f"slowest per status: { ({k: round(v, 2) for k, v in sorted(tally.slowest.items())}) }; "
        f"problems: {dict(tally.problems)}; "
        f"the clients' own loop late by up to {max(lags) * 1000:.0f} ms "
        f"(median {statistics.median(lags) * 1000:.0f} ms); inside ywtb serve (past the "
        f"in-flight limit): {len(server_ms)} requests, p50 {statistics.median(server_ms):.0f} ms, "
        f"max {server_ms[-1]:.0f} ms",
    )
    assert tally.bad == []
    assert latencies[-1] <= SLOWEST_S
    assert tally.health_polls > 0 and tally.health_failures == []
    assert created > 0

    async def drained() -> bool:
        return await count_outbox(connector, sent_at=None) == 0

    assert served.serve.poll() is None and served.relay.poll() is None  # both still running
    await eventually(drained, timeout_s=120)
    assert await count_outbox(connector, type=ApplicationEvent.RECEIVED) == created
    log_text = log.read_text()
    assert "Traceback" not in log_text, log_text[-3000:]


@pytest.fixture
def proxied(settings: Settings) -> Iterator[TcpProxy]:
    """A TCP proxy in front of PostgreSQL; the store settings point at it."""
    url = make_url(settings.store.url)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        settings.store.url = url.set(host="127.0.0.1", port=proxy.port).render_as_string(
            hide_password=False
        )
        yield proxy


async def test_with_the_store_away_the_api_answers_503_with_retry_after_then_recovers(
    settings: Settings, platforms: dict[str, Platform], proxied: TcpProxy
) -> None:
    with ServedApp(create_app(settings)) as served:
        async with httpx.AsyncClient(base_url=served.url, headers=AUTH, timeout=30) as client:

            async def submit() -> tuple[httpx.Response, float]:
                started = time.monotonic()
                response = await client.post(
                    "/api/v1/applications",
                    json=low_voltage(JINGAN),
                    headers={"Idempotency-Key": uuid.uuid4().hex},
                )
                return response, time.monotonic() - started

            first, _ = await submit()
            assert first.status_code == 201, first.text
            application_id = first.json()["id"]

            proxied.cut()
            for _ in range(3):
                answer, took = await submit()
                assert answer.status_code == 503, answer.text
                assert answer.headers["content-type"] == "application/problem+json"
                assert int(answer.headers["Retry-After"]) >= 1
                assert answer.json()["type"] == "/problems/store_unavailable"
                assert took < 2.0
            lookup = await client.get(f"/api/v1/applications/{application_id}")
            assert lookup.status_code == 503 and "Retry-After" in lookup.headers
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["failing"] == ["store"]

            proxied.restore()
            again, _ = await submit()
            assert again.status_code == 201, again.text
            lookup = await client.get(f"/api/v1/applications/{application_id}")
            assert lookup.status_code == 200
            assert lookup.json()["status"] == "ready"
            assert (await client.get("/readyz")).status_code == 200


async def test_with_the_store_away_the_exchange_log_keeps_its_batch_and_its_loop_running(
    settings: Settings, proxied: TcpProxy
) -> None:
    """The outage is the store's to report: the writer waits it out, nothing is lost."""
    engine, sessions = await open_store(settings.store)
    loops = Loops()
    exchanges = AuditLog(sessions, settings.protection, loops)
    try:
        await exchanges.record(Exchange(actor="licence", operation="POST /ws", outcome="ok"))
        await exchanges.flush()
        proxied.cut()
        await exchanges.record(Exchange(actor="project", operation="GET /api", outcome="ok"))
        await asyncio.sleep(1.5)  # several tries against the missing store
        writer = loops.state("audit-writer")
        assert writer.running and writer.last_error is None and loops.stuck() == []
        assert exchanges.backlog() == 1

        proxied.restore()
        await exchanges.flush()
        async with sessions() as session:
            actors = list(await session.scalars(select(AuditRecord.actor)))
    finally:
        await exchanges.aclose()
        await engine.dispose()
    assert actors == ["licence", "project"]


async def test_with_the_pool_exhausted_the_api_answers_503_with_retry_after_within_a_second(
    settings: Settings, platforms: dict[str, Platform]
) -> None:
    settings.store.pool_size, settings.store.max_overflow = 1, 0
    settings.store.pool_timeout_s = 0.5
    dsn = settings.store.url.replace("postgresql+asyncpg://", "postgresql://")
    with ServedApp(create_app(settings)) as served:
        async with (
            httpx.AsyncClient(base_url=served.url, headers=AUTH, timeout=30) as first,
            httpx.AsyncClient(base_url=served.url, headers=AUTH, timeout=30) as second,
        ):
            assert (await first.get("/api/v1/ops/outbox")).status_code == 200
            blocker = await asyncpg.connect(dsn)
            try:
                # Hold the one pooled connection: the first request's query waits on a lock.
                lock = blocker.transaction()
                await lock.start()
                table = f'"{settings.store.schema_name}".outbox'
                await blocker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
                held = asyncio.create_task(first.get("/api/v1/ops/outbox"))
                await asyncio.sleep(0.5)
                started = time.monotonic()
                busy = await second.get("/api/v1/ops/outbox")
                took = time.monotonic() - started
                await lock.rollback()
            finally:
                await blocker.close()
            served_at_last = await held

    assert busy.status_code == 503
    assert busy.headers["content-type"] == "application/problem+json"
    assert busy.json()["type"] == "/problems/store_unavailable"
    assert busy.headers["Retry-After"] == "1"
    assert took < 1.5
    assert served_at_last.status_code == 200


@pytest.mark.parametrize("ping_idle_s", [0.0, 3600.0])
async def test_a_connection_lost_in_the_pool_is_replaced_if_it_idled_or_fails_one_unit_of_work(
    settings: Settings, proxied: TcpProxy, ping_idle_s: float
) -> None:
    """A restart of the store seen by the pool: a connection idle for ``ping_idle_s`` is
    pinged and replaced unseen; a hot one (not pinged) fails the one unit of work that meets
    it, and the pool connects afresh for the next."""
    settings.store.ping_idle_s = ping_idle_s
    engine, sessions = await open_store(settings.store)

    async def count_outbox() -> int:
        async with sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(OutboxRow)) or 0)

    try:
        assert await count_outbox() == 0  # the connection is now pooled
        proxied.cut()
        proxied.restore()
        await asyncio.sleep(0.2)  # the reset has reached the pooled connection
        if ping_idle_s == 0.0:
            assert await count_outbox() == 0
        else:
            with pytest.raises(StoreUnavailable):
                await count_outbox()
            assert await count_outbox() == 0
    finally:
        await engine.dispose()
