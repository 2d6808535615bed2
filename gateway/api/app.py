"""The FastAPI app: ``create_app()`` builds it; its lifespan calls ``bootstrap()``."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

from gateway.api import applications, flows, health
from gateway.api.problems import install_problem_handlers
from gateway.bootstrap import Container, bootstrap
from gateway.callbacks import record_failed_callback
from gateway.logs import request_id
from gateway.settings import Settings

log = logging.getLogger("gateway.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def create_app(settings: Settings | None = None, container: Container | None = None) -> FastAPI:
    """The API; with ``container`` the caller owns its lifetime, else the lifespan builds one."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if container is not None:
            app.state.container = container
            yield
            return
        built = await bootstrap(settings)
        app.state.container = built
        try:
            yield
        finally:
            await built.aclose()

    app = FastAPI(
        title="ywtb-connector",
        summary="一网通办 connector of State Grid Shanghai: 一证办电 applications and evidence",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_problem_handlers(app)

    @app.middleware("http")
    async def _request_id(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        incoming = request.headers.get("x-request-id", "")
        rid = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request.state.request_id = rid
        token = request_id.set(rid)
        started = time.perf_counter()
        try:
            response = await call_next(request)
            response.headers["X-Request-ID"] = rid
            elapsed_ms = round((time.perf_counter() - started) * 1000)
            await record_failed_callback(request, response.status_code, elapsed_ms)
            log.info(
                "request",
                extra={
                    "method": request.method,
                    "path": request.url.path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
            return response
        finally:
            request_id.reset(token)

    app.include_router(health.router)
    app.include_router(applications.router)
    app.include_router(flows.router)
    return app
