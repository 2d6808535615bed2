"""The FastAPI app: ``create_app()`` builds it; its lifespan calls ``bootstrap()``."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api import applications, contract, flows, health, metrics, ops, reports
from gateway.api.backpressure import InFlightLimit
from gateway.api.docs import install_offline_docs
from gateway.api.limits import BodyLimit, CallerLimits, HeadAsGet
from gateway.api.metrics import ops_figures_running
from gateway.api.problems import install_problem_handlers
from gateway.bootstrap import Container, bootstrap
from gateway.callbacks import record_failed_callback
from gateway.console import routes as console
from gateway.logs import request_id
from gateway.metrics import HTTP_REQUEST_DURATION, HTTP_REQUESTS
from gateway.settings import Settings, load_settings
from gateway.tracing import TRACE_ID_HEADER, current_ids, untraced

log = logging.getLogger("gateway.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def create_app(settings: Settings | None = None, container: Container | None = None) -> FastAPI:
    """The API; with ``container`` the caller owns its lifetime, else the lifespan builds one."""
    resolved = container.settings if container is not None else settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if container is not None:
            app.state.container = container
            async with ops_figures_running(app, container):
                yield
            return
        built = await bootstrap(resolved)
        app.state.container = built
        try:
            async with ops_figures_running(app, built):
                yield
        finally:
            await built.aclose()

    app = FastAPI(
        title="ywtb-connector",
        summary="一网通办 connector of State Grid Shanghai: 一证办电 applications and evidence",
        version="0.1.0",
        lifespan=lifespan,
        telemetry={"exclude": untraced},
        # Served by gateway.api.contract: public or behind a key, by a setting.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = resolved
    install_problem_handlers(app)
    install_offline_docs(app)
    # Innermost first: HEAD as GET, the body limit, the in-flight limit and its line (a
    # request refused costs next to nothing), then the callers' limits, so that a refused
    # or rate-limited request never takes a slot or a place in line; the request id (below)
    # wraps them all, so that every refusal names its request.
    app.add_middleware(HeadAsGet)
    app.add_middleware(BodyLimit, settings=resolved.limits)
    app.add_middleware(
        InFlightLimit,
        max_in_flight=resolved.api.max_in_flight,
        retry_after_s=resolved.api.retry_after_s,
        loop_lag_target_s=resolved.api.loop_lag_target_s,
        max_queued=resolved.api.max_queued,
        queue_wait_s=resolved.api.queue_wait_s,
    )
    app.add_middleware(CallerLimits, settings=resolved.limits)

    app.add_middleware(RequestIds)

    app.include_router(health.router)
    app.include_router(applications.router)
    app.include_router(flows.router)
    app.include_router(reports.router)
    app.include_router(metrics.router)
    app.include_router(ops.router)
    console.install(app)
    contract.install(app)
    return app


class RequestIds:
    """The request id (``X-Request-ID``, taken from the caller when well formed), the trace
    id header, the request's metrics and its access log line.

    Pure ASGI: Starlette's ``BaseHTTPMiddleware`` runs every request through an extra
    task and stream, a cost each request paid for a few headers.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        incoming = request.headers.get("x-request-id", "")
        rid = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request.state.request_id = rid
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_ids(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = rid
                if ids := current_ids():  # the request's span is FastAPI's own
                    headers[TRACE_ID_HEADER] = ids[0]
            await send(message)

        try:
            await self.app(scope, receive, send_with_ids)
            _count(request, status, time.perf_counter() - started)
            elapsed_ms = round((time.perf_counter() - started) * 1000)
            await record_failed_callback(request, status, elapsed_ms)
            log.info(
                "request",
                extra={
                    "method": request.method,
                    "path": request.url.path,
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
        finally:
            request_id.reset(token)


def _count(request: Request, status: int, seconds: float) -> None:
    """``ywtb_http_requests`` and its latency, by route template (bounded labels)."""
    route = request.scope.get("route")
    template = getattr(route, "path", None) or "unmatched"
    HTTP_REQUESTS.labels(template, request.method, str(status)).inc()
    HTTP_REQUEST_DURATION.labels(template, request.method).observe(seconds)
