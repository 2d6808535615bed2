"""The connector's background machinery (relay and workers) inside a test."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from pydantic import BaseModel, SecretStr

from gateway.bootstrap import Container
from gateway.bus import KafkaBus
from gateway.relay import Relay
from gateway.settings import Settings
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


def settings_env(settings: Settings) -> dict[str, str]:
    """``settings`` as the YWTB_ environment of a separate process."""
    env: dict[str, str] = {"YWTB_ENVIRONMENT": settings.environment}
    for concern, model in settings:
        if not isinstance(model, BaseModel):
            continue
        for name, value in model:
            if value is None:
                continue
            value = _plain(value)
            text = json.dumps(value) if isinstance(value, list | dict) else str(value)
            env[f"YWTB_{concern.upper()}_{name.upper()}"] = text
    return env


def _plain(value: object) -> object:
    """A settings value as JSON-ready data, secrets revealed (nested models and dicts too)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, BaseModel):
        return {name: _plain(field) for name, field in value}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def ywtb_process(args: list[str], settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """``ywtb ARGS...`` as its own process with ``settings``, as ops would run it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("YWTB_")}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", *args],
            env={**env, **settings_env(settings), "YWTB_LOG_LEVEL": "INFO"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def worker_process(name: str, settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """``ywtb worker NAME`` as its own process, as ops would run it."""
    return ywtb_process(["worker", name], settings, log)
