"""The connector's background machinery (relay and workers) inside a test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from gateway.bootstrap import Container
from gateway.bus import KafkaBus
from gateway.relay import Relay
from gateway.worker import Worker
from gateway.workers import WORKERS


@asynccontextmanager
async def running(container: Container, *workers: str) -> AsyncIterator[None]:
    """Relay plus the named workers, stopped (gracefully) on exit."""
    stop = asyncio.Event()
    bus = KafkaBus(container.settings.kafka)
    tasks = [
        asyncio.create_task(Relay(container.sessions, bus, container.settings.relay).run(stop))
    ]
    tasks += [
        asyncio.create_task(
            Worker(WORKERS[name](container), container.sessions, container.settings).run(stop)
        )
        for name in workers
    ]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await bus.close()


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    """Wait until ``check()`` is true; fail the test after ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        while not await check():
            await asyncio.sleep(0.05)
