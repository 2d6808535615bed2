"""``GET /metrics``: the Prometheus text exposition (``gateway.metrics``), for a Bearer key.

With ``YWTB_METRICS_PORT`` set, the same exposition is also served without
authentication on that port, for a Prometheus on a private network.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, start_http_server

from gateway.api.deps import OpsClient
from gateway.bootstrap import Container
from gateway.metrics import Exposition, FiguresCollector
from gateway.opsdata import OpsFigures, figures_for

router = APIRouter()


def exposition_of(request: Request) -> Exposition:
    exposition: Exposition = request.app.state.metrics
    return exposition


@router.get(
    "/metrics",
    include_in_schema=False,  # Prometheus text, for scrapers; README ("Metrics") documents it
    tags=["ops"],
    summary="Prometheus metrics (families ywtb_*)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(_client: OpsClient, request: Request) -> Response:
    return Response(generate_latest(exposition_of(request)), media_type=CONTENT_TYPE_LATEST)


@asynccontextmanager
async def ops_figures_running(app: FastAPI, container: Container) -> AsyncIterator[OpsFigures]:
    """For the app's lifetime: the periodic job that gathers the ops figures (supervised in
    ``container.loops``), the exposition ``/metrics`` serves, and the separate metrics port
    when one is set. ``app.state.ops_figures`` is the figures' cache (``.latest``)."""
    settings = container.settings.metrics
    figures = figures_for(container.sessions, container.settings)
    exposition = Exposition(
        FiguresCollector(lambda: figures.latest, container.breakers, container.loops)
    )
    app.state.ops_figures, app.state.metrics = figures, exposition
    stop = asyncio.Event()
    job = asyncio.create_task(figures.run(stop, container.loops, settings.interval_s))
    server = None
    if settings.port is not None:
        server, thread = start_http_server(settings.port, addr=settings.host, registry=exposition)
    try:
        yield figures
    finally:
        stop.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(job, 2.0)  # a gathering in progress is cancelled
        if server is not None:
            await asyncio.to_thread(server.shutdown)
            server.server_close()
            thread.join()
