"""RFC 9457 problem details for every error, and the one place errors become status codes."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.logs import request_id
from schemas.errors import (
    Conflict,
    ConnectorError,
    InvalidInput,
    NotFound,
    Overloaded,
    PermanentError,
    PlatformRejected,
    TransientError,
    Unauthorized,
)

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class FieldError(BaseModel):
    field: str
    reason: str


class Problem(BaseModel):
    """RFC 9457 problem details, as every error is answered."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    request_id: str | None = None
    errors: list[FieldError] | None = None


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the problems an operation can answer."""
    described = {
        401: "missing or bad API key",
        404: "not found",
        409: "conflict with an earlier request",
        422: "invalid request; each field named",
        503: "a platform or the store is unavailable, or the service is saturated "
        "(with Retry-After)",
    }
    return {
        status: {
            "model": Problem,
            "description": described.get(status, "error"),
            "content": {PROBLEM_JSON: {}},
        }
        for status in statuses
    }


_STATUS: list[tuple[type[ConnectorError], int]] = [
    (InvalidInput, 422),
    (NotFound, 404),
    (Conflict, 409),
    (Unauthorized, 401),
    (PlatformRejected, 502),
    (PermanentError, 400),
    (TransientError, 503),
]


def status_for(error: ConnectorError) -> int:
    return next((status for kind, status in _STATUS if isinstance(error, kind)), 500)


#: Retry-After of a transient error that carries no better estimate and no settings at hand.
DEFAULT_RETRY_AFTER_S = 1


def retry_after_s(request: Request, error: TransientError) -> int:
    """Seconds a client should wait: the error's own estimate, else the configured one."""
    estimate = error.context.get("retry_after_s", error.context.get("retry_in_s"))
    if isinstance(estimate, int | float) and estimate > 0:
        return max(1, math.ceil(estimate))
    container = getattr(request.app.state, "container", None)
    if container is not None:
        return int(container.settings.api.retry_after_s)
    return DEFAULT_RETRY_AFTER_S


def error_response(request: Request, exc: ConnectorError) -> JSONResponse:
    """The problem a client gets for ``exc``; every transient one carries ``Retry-After``."""
    status = status_for(exc)
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, TransientError):
        headers["Retry-After"] = str(retry_after_s(request, exc))
    extra: dict[str, Any] = {}
    if isinstance(exc, InvalidInput):
        extra["errors"] = [{"field": exc.field, "reason": exc.reason}]
    if status >= 500 and not isinstance(exc, Overloaded):
        log.warning("request failed", extra={"code": exc.code, "detail": exc.detail})
    title = type(exc).__name__
    return problem(request, status, exc.code, title, exc.detail, headers, **extra)


def problem(
    request: Request,
    status: int,
    code: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    # The state outlives the middleware, so even an unexpected error names its request.
    rid = getattr(request.state, "request_id", None) or request_id.get()
    body: dict[str, Any] = {
        "type": f"/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "request_id": rid,
        **extra,
    }
    headers = {**(headers or {}), **({"X-Request-ID": rid} if rid else {})}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header"}:
        parts = parts[1:]
    return ".".join(parts) or "body"


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _field(e["loc"]), "reason": e["msg"].removeprefix("Value error, ")}
            for e in exc.errors()
        ]
        fields = ", ".join(e["field"] for e in errors)
        return problem(
            request, 422, "invalid_input", "Invalid request", f"invalid: {fields}", errors=errors
        )

    @app.exception_handler(ConnectorError)
    async def _connector(request: Request, exc: ConnectorError) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(
            request, exc.status_code, f"http_{exc.status_code}", str(exc.detail), str(exc.detail)
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return problem(request, 500, "internal", "Internal error", "an unexpected error occurred")
