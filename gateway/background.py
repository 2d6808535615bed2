"""What runs in the background of each process, every loop under ``gateway.supervise``.

``ywtb relay`` hosts the outbox relay and every periodic job of
``PERIODIC_JOBS``; ``ywtb worker NAME`` hosts that worker's two loops; the
sandbox hosts all of them. Each loop is registered in the process's
``container.loops``, which ``/readyz`` reads.

A periodic job is added in one place, ``PERIODIC_JOBS``: a name and a function
that builds its loop body from the container, usually with ``every``::

    PERIODIC_JOBS["sweeper"] = lambda c: every(c.settings.sweeper.interval_s, Sweeper(c).sweep)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.bootstrap import Container
from gateway.deadlines import deadline_job
from gateway.relay import Relay
from gateway.supervise import Beat, LoopBody, Loops, periodic, supervise
from gateway.sweeper import sweeper
from gateway.worker import Worker
from gateway.workers import WORKERS

log = logging.getLogger(__name__)

PeriodicJob = Callable[[Container], LoopBody]

#: Periodic jobs hosted by ``ywtb relay`` (and the sandbox), by name (the loop is ``job.<name>``).
PERIODIC_JOBS: dict[str, PeriodicJob] = {
    "sweeper": sweeper,  # unfinished work in the store, driven again
    "deadlines": deadline_job,  # the customer's clock: warnings and overdue events
}


def every(interval_s: float, job: Callable[[], Awaitable[Any]]) -> LoopBody:
    """A loop body that runs ``job`` every ``interval_s`` seconds."""

    async def body(stop: asyncio.Event, beat: Beat) -> None:
        await periodic(stop, beat, interval_s, job)

    return body


def relay_loops(container: Container) -> dict[str, LoopBody]:
    """What ``ywtb relay`` runs: the outbox relay and the periodic jobs."""
    relay = Relay(container.sessions, container.bus, container.settings.relay)
    return {
        "relay": relay.run,
        **{f"job.{name}": build(container) for name, build in PERIODIC_JOBS.items()},
    }


def worker_loops(container: Container, name: str) -> dict[str, LoopBody]:
    """What ``ywtb worker NAME`` runs: the worker's loops (its topics, and their retries)."""
    return Worker(WORKERS[name](container), container.sessions, container.settings).loops()


async def run_supervised(
    bodies: dict[str, LoopBody], stop: asyncio.Event, loops: Loops, shutdown_s: float
) -> None:
    """Supervise every loop until ``stop`` is set; then give them ``shutdown_s`` to finish.

    A loop still busy after that is cancelled: what it had not finished is not
    committed (not marked sent, not acknowledged) and is done again after the restart.
    """
    tasks = [
        asyncio.create_task(supervise(name, body, stop, loops), name=name)
        for name, body in bodies.items()
    ]
    try:
        await stop.wait()
    finally:
        stop.set()
        _, late = await asyncio.wait(tasks, timeout=shutdown_s)
        for task in late:
            log.warning("loop cancelled at shutdown", extra={"loop": task.get_name()})
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
