"""Background loops are supervised: one that raises is restarted, and the registry says so."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select, update

from gateway.background import PERIODIC_JOBS, every, relay_loops, run_supervised, worker_loops
from gateway.bootstrap import Container
from gateway.outbox import add_event
from gateway.store.db import transaction
from gateway.store.models import OutboxRow
from gateway.supervise import LoopBody
from schemas.events import APPLICATION_EVENTS, ApplicationEvent, Event
from tests.running import eventually


async def _unsent(container: Container) -> int:
    async with container.sessions() as session:
        return int(
            await session.scalar(select(func.count()).where(OutboxRow.sent_at.is_(None))) or 0
        )


async def test_a_failing_relay_and_periodic_job_are_restarted_and_reported(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[int] = []

    def flaky(_container: Container) -> LoopBody:
        async def job() -> None:
            runs.append(len(runs))
            if len(runs) <= 2:
                raise RuntimeError(f"job failed on run {len(runs)}")

        return every(0.05, job)

    monkeypatch.setitem(PERIODIC_JOBS, "flaky", flaky)
    good = Event(topic=APPLICATION_EVENTS, type=ApplicationEvent.RECEIVED, key="app-1", data={})
    async with transaction(container.sessions) as session:
        add_event(session, good)
        poison = add_event(
            session,
            Event(topic=APPLICATION_EVENTS, type=ApplicationEvent.RECEIVED, key="app-2", data={}),
        )
        poison.type = ""  # not a valid CloudEvent: publishing it raises
    loops = container.loops
    stop = asyncio.Event()
    bodies = relay_loops(container) | worker_loops(container, "timeline")
    task = asyncio.create_task(run_supervised(bodies, stop, loops, shutdown_s=5))
    try:

        async def relay_restarted() -> bool:
            relay = loops.snapshot().get("relay")
            return relay is not None and relay["restarts"] >= 1

        await eventually(relay_restarted, timeout_s=30)
        relay = loops.snapshot()["relay"]
        assert relay["last_error"] is not None
        assert "CloudEventValidationError" in relay["last_error"]
        assert relay["last_error_at"] is not None

        async def job_recovered() -> bool:
            return len(runs) >= 4

        await eventually(job_recovered, timeout_s=30)
        job = loops.snapshot()["job.flaky"]
        assert (job["restarts"], job["running"], job["ok"]) == (2, True, True)
        assert job["last_error"] == "RuntimeError: job failed on run 2"

        async with transaction(container.sessions) as session:
            await session.execute(
                update(OutboxRow)
                .where(OutboxRow.event_id == poison.event_id)
                .values(type=ApplicationEvent.RECEIVED)
            )

        async def published() -> bool:
            return await _unsent(container) == 0

        await eventually(published, timeout_s=30)
        await eventually(lambda: _running(container, "relay"), timeout_s=10)
        snapshot = loops.snapshot()
        assert set(snapshot) == {
            "relay",
            *(f"job.{name}" for name in PERIODIC_JOBS),
            "worker.timeline",
            "worker.timeline.retry",
        }
        assert loops.stuck() == []
    finally:
        stop.set()
        await task
    assert all(not state["running"] for state in loops.snapshot().values())
    assert sorted(loops.stuck()) == sorted(loops.snapshot()), "stopped loops are reported as such"


async def _running(container: Container, name: str) -> bool:
    state = container.loops.snapshot().get(name)
    return state is not None and bool(state["running"]) and bool(state["ok"])
