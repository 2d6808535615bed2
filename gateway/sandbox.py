"""``ywtb sandbox``: broker, simulators, API, relay and workers in one process, on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from adapters.platform import Simulated
from adapters.registry import PLATFORMS
from adapters.simulation import ServedApp, SimulatorControl
from gateway.api.app import create_app
from gateway.background import relay_loops, run_supervised, worker_loops
from gateway.bootstrap import bootstrap
from gateway.devbroker import DevBroker
from gateway.runtime import api_server, stop_on_signals
from gateway.settings import Settings, load_settings
from gateway.workers import WORKERS
from schemas.seed import Seed, load_seed

log = logging.getLogger(__name__)
SANDBOX_DIR = Path("var")


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run_sandbox(port: int, seed: Path | None) -> None:
    """Start everything, serve until SIGINT/SIGTERM, stop everything."""
    settings = load_settings()
    SANDBOX_DIR.mkdir(exist_ok=True)
    broker: DevBroker | None = None
    if not settings.kafka.bootstrap:
        _say("starting the development broker (Tansu) ...")
        broker = DevBroker(log_file=SANDBOX_DIR / "broker.log").start()
        settings.kafka.bootstrap = broker.bootstrap
    if "YWTB_STORE_URL" not in os.environ:
        db = SANDBOX_DIR / "sandbox.db"
        for path in (db, db.with_suffix(".db-wal"), db.with_suffix(".db-shm")):
            path.unlink(missing_ok=True)
        settings.store.url = f"sqlite+aiosqlite:///{db}"
    simulators = start_simulators(settings, load_seed(seed), f"http://127.0.0.1:{port}")
    try:
        asyncio.run(_serve(settings, port, simulators))
    finally:
        for served in simulators.values():
            served.stop()
        if broker is not None:
            broker.stop()
        _say("sandbox stopped")


def start_simulators(
    settings: Settings,
    seed: Seed,
    api_url: str,
    *,
    controls: Mapping[str, SimulatorControl] | None = None,
) -> dict[str, ServedApp]:
    """Every platform of the registry simulated on its own loopback port; ``settings`` point
    at them. ``controls`` (by platform) inject faults and record what a simulator received."""
    simulators: dict[str, ServedApp] = {}
    try:
        for platform in PLATFORMS:
            simulated = Simulated(
                seed=seed,
                api_url=api_url,
                control=(controls or {}).get(platform.name) or SimulatorControl(),
                decision_delay_s=settings.sandbox.permit_decision_delay_s,
                callback_backoff_s=settings.sandbox.callback_backoff_s,
            )
            served = ServedApp(platform.build_simulator(settings, simulated)).start()
            simulators[platform.name] = served
            platform.settings_of(settings).url = served.url
    except BaseException:
        for served in simulators.values():
            served.stop()
        raise
    return simulators


async def _serve(settings: Settings, port: int, simulators: dict[str, ServedApp]) -> None:
    """Serve until a signal; a failing loop is restarted by its supervisor, never fatal.

    Only the API server ending by itself (it cannot bind its port) ends the sandbox early.
    """
    stop = asyncio.Event()
    stop_on_signals(stop)
    container = await bootstrap(settings)
    server = api_server(
        create_app(container=container), "127.0.0.1", port, settings.limits, settle_heap=True
    )
    api = asyncio.create_task(server.serve(), name="api")
    bodies = relay_loops(container)
    for name in WORKERS:
        bodies |= worker_loops(container, name)
    loops = asyncio.create_task(
        run_supervised(bodies, stop, container.loops, settings.loops.shutdown_s), name="loops"
    )
    while not server.started and not api.done():
        await asyncio.sleep(0.05)
    if server.started:
        _banner(settings, port, simulators)
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([stopping, api], return_when=asyncio.FIRST_COMPLETED)
    if not stop.is_set():
        log.error("the API server ended; stopping the sandbox")
    _say("shutting down ...")
    stop.set()
    server.should_exit = True
    await loops
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(api, settings.loops.shutdown_s)
    await container.aclose()


def _banner(settings: Settings, port: int, simulators: dict[str, ServedApp]) -> None:
    base = f"http://127.0.0.1:{port}"
    key = settings.sandbox.api_key.get_secret_value()
    _say(
        "\n".join(
            [
                "ywtb-connector sandbox is up",
                f"  API        {base}   (docs {base}/docs, OpenAPI {base}/openapi.json)",
                f"  health     {base}/healthz   ready {base}/readyz",
                f"  console    {base}/ops   (sign in with the API key)",
                f"  API key    Authorization: Bearer {key}",
                f"  Kafka      {settings.kafka.bootstrap}",
                f"  store      {settings.store.url}",
                *(f"  simulator  {name:<9} {served.url}" for name, served in simulators.items()),
                "  Ctrl-C stops everything.",
            ]
        )
    )
