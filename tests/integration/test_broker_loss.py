"""Broker loss and return: workers and relay resume on a new, empty broker; SIGTERM is prompt."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest
from sqlalchemy import func, select

from gateway.bootstrap import Container
from gateway.devbroker import DevBroker, free_port
from gateway.lag import worker_lag
from gateway.outbox import add_event
from gateway.store.db import transaction
from gateway.store.models import OutboxRow, TimelineEntry
from gateway.workers import WORKER_TOPICS
from schemas.events import APPLICATION_EVENTS, ApplicationEvent, Event
from tests.running import eventually, worker_process, ywtb_process


async def _commit_events(container: Container, label: str, count: int) -> set[str]:
    """``count`` events committed through the outbox, as the application services do."""
    events = [
        Event(
            topic=APPLICATION_EVENTS,
            type=ApplicationEvent.RECEIVED,
            key=f"app-{label}-{n % 5}",
            data={"label": label, "n": n},
        )
        for n in range(count)
    ]
    async with transaction(container.sessions) as session:
        for event in events:
            add_event(session, event)
    return {event.id for event in events}


async def _timeline(container: Container) -> tuple[int, set[str]]:
    async with container.sessions() as session:
        rows = await session.scalar(select(func.count()).select_from(TimelineEntry))
        ids = set((await session.scalars(select(TimelineEntry.event_id))).all())
    return int(rows or 0), ids


async def _unsent(container: Container) -> int:
    async with container.sessions() as session:
        return int(
            await session.scalar(select(func.count()).where(OutboxRow.sent_at.is_(None))) or 0
        )


def _log_lines(log: Path, message: str) -> list[dict[str, object]]:
    """The JSON log records of ``log`` with this message."""
    lines = []
    for line in (log.read_text() if log.exists() else "").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("msg") == message:
            lines.append(record)
    return lines


async def _wait_for_log(log: Path, message: str, count: int = 1, timeout_s: float = 60) -> None:
    async def logged() -> bool:
        return len(_log_lines(log, message)) >= count

    await eventually(logged, timeout_s=timeout_s)


async def _terminate(process: subprocess.Popen[bytes] | subprocess.Popen[str]) -> tuple[int, float]:
    """SIGTERM ``process``; its exit code and how long it took to exit."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.to_thread(process.wait, 30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return code, time.monotonic() - started


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; killed at the end if the test left them running."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


async def test_workers_and_relay_resume_on_a_new_empty_broker_and_apply_each_event_once(
    container: Container,
    broker: DevBroker,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    worker_log, relay_log = tmp_path / "worker.log", tmp_path / "relay.log"
    processes.append(worker_process("timeline", container.settings, worker_log))
    processes.append(ywtb_process(["relay"], container.settings, relay_log))

    before = await _commit_events(container, "before", 40)
    await eventually(lambda: _applied(container, before), timeout_s=60)

    broker.kill()
    during = await _commit_events(container, "during", 40)
    # Both processes meet the dead broker: the worker's check and the relay's publish fail.
    await _wait_for_log(worker_log, "broker unavailable, reconnecting", count=2, timeout_s=30)
    await _wait_for_log(relay_log, "relay backing off", timeout_s=30)
    assert await _unsent(container) == 40, "nothing is marked sent while the broker is away"

    restarted = DevBroker(port=broker.port).start()
    try:
        back_at = time.monotonic()
        after = await _commit_events(container, "after", 40)
        everything = before | during | after
        await eventually(lambda: _applied(container, everything), timeout_s=60)

        async def no_lag() -> bool:
            rows = await worker_lag(
                container.settings.kafka, {"timeline": WORKER_TOPICS["timeline"]}
            )
            main = [r for r in rows if r["topic"] == APPLICATION_EVENTS]
            return bool(main) and all(r["lag"] == 0 for r in rows)

        await eventually(no_lag, timeout_s=max(1.0, 60 - (time.monotonic() - back_at)))
        recovered_s = time.monotonic() - back_at
        await asyncio.sleep(1)  # a late duplicate would show now
        rows, ids = await _timeline(container)
        assert ids == everything
        assert rows == len(everything), "each event is applied exactly once"
        assert await _unsent(container) == 0
        assert recovered_s < 60
        # The idle loop (the retry topic's) notes the return at its first check after it has
        # reconnected, which may come after the busy loop has caught up: wait for both notes.
        await _wait_for_log(worker_log, "broker back", count=2, timeout_s=30)

        for process in processes:
            code, took = await _terminate(process)
            assert (code, took < 10) == (0, True), (code, took)
    finally:
        restarted.stop()

    # One warning when the outage starts and one note when it ends, per loop: not a line per try.
    for loop in ("worker.timeline", "worker.timeline.retry"):
        lost = [
            r
            for r in _log_lines(worker_log, "broker unavailable, reconnecting")
            if r["loop"] == loop
        ]
        back = [r for r in _log_lines(worker_log, "broker back") if r["loop"] == loop]
        assert (len(lost), len(back)) == (1, 1), (loop, lost, back)
    assert len(_log_lines(relay_log, "relay backing off")) == 1
    assert len(_log_lines(relay_log, "relay publishing again")) == 1


async def _applied(container: Container, event_ids: set[str]) -> bool:
    return event_ids <= (await _timeline(container))[1]


@pytest.mark.parametrize("broker_state", ["up", "killed", "hung"])
async def test_sigterm_ends_worker_relay_and_api_within_10_s_whatever_the_broker_does(
    container: Container,
    broker: DevBroker,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
    broker_state: str,
) -> None:
    port = free_port()
    logs = {name: tmp_path / f"{name}.log" for name in ("worker", "relay", "serve")}
    started = {
        "worker": worker_process("timeline", container.settings, logs["worker"]),
        "relay": ywtb_process(["relay"], container.settings, logs["relay"]),
        "serve": ywtb_process(["serve", "--port", str(port)], container.settings, logs["serve"]),
    }
    processes.extend(started.values())
    await _commit_events(container, "term", 20)
    await _wait_for_log(logs["worker"], "worker consuming", count=2)
    await _wait_for_log(logs["relay"], "relay started")

    async def serving() -> bool:
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                return (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
        except httpx.TransportError:
            return False

    await eventually(serving, timeout_s=60)
    if broker_state != "up":
        _fail(broker, broker_state)
        await asyncio.sleep(2)  # every process is now talking to a dead or silent broker
        async with httpx.AsyncClient(timeout=30) as client:
            ready = await client.get(f"http://127.0.0.1:{port}/readyz")
        assert ready.status_code == 503, ready.text

    results = dict(
        zip(started, await asyncio.gather(*map(_terminate, started.values())), strict=True)
    )
    for name, (code, took) in results.items():
        assert code == 0, (name, logs[name].read_text()[-3000:])
        assert took < 10, (name, took)


@pytest.mark.parametrize("broker_state", ["up", "killed", "hung"])
async def test_sigterm_ends_the_sandbox_within_10_s_whatever_the_broker_does(
    broker: DevBroker, tmp_path: Path, broker_state: str
) -> None:
    sandbox = _start_sandbox(tmp_path, free_port(), broker.bootstrap)
    try:
        assert sandbox.stdout is not None
        banner = await asyncio.to_thread(_read_until, sandbox.stdout, "Ctrl-C", 60)
        assert "Ctrl-C" in banner, banner
        if broker_state != "up":
            _fail(broker, broker_state)
            await asyncio.sleep(2)
        code, took = await _terminate(sandbox)
    finally:
        sandbox.kill()
        if sandbox.stdout:
            sandbox.stdout.close()
    assert (code, took < 10) == (0, True), (code, took)


def _fail(broker: DevBroker, how: str) -> None:
    if how == "killed":
        broker.kill()
    else:
        broker.freeze()


def _start_sandbox(tmp_path: Path, port: int, bootstrap: str) -> subprocess.Popen[str]:
    """``ywtb sandbox`` on the test's broker (it starts its own store and simulators)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("YWTB_")}
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "sandbox", "--port", str(port)],
        cwd=tmp_path,
        env={
            **env,
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
            "YWTB_KAFKA_BOOTSTRAP": bootstrap,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _read_until(stream: IO[str], marker: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    lines = []
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            break
    return "".join(lines)
