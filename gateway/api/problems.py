"""RFC 9457 problem details for every error, and the one place errors become status codes."""

from __future__ import annotations

import logging
import math
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Receive, Scope, Send

from gateway.logs import request_id
from gateway.tracing import TRACE_ID_HEADER, current_ids
from schemas.applications import field_path
from schemas.errors import (
    Conflict,
    ConnectorError,
    Forbidden,
    InvalidInput,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    PermanentError,
    PlatformRejected,
    RateLimited,
    RequestTimeout,
    StageOutOfOrder,
    TransientError,
    Unauthorized,
    UnsupportedMediaType,
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
    current_stage: str | None = Field(
        None, description="stage_out_of_order: where the application stands"
    )
    expected: list[str] | None = Field(
        None, description="stage_out_of_order: the stages that may come next"
    )


#: What each status an operation can answer means (the OpenAPI descriptions).
DESCRIBED: dict[int, str] = {
    400: "the body could not be read",
    401: "missing or bad API key (or callback signature)",
    403: "the client's scopes do not allow this operation",
    404: "not found (or another client's)",
    405: "method not allowed (see Allow)",
    408: "the request was sent too slowly",
    409: "conflict with an earlier request",
    413: "request body over the route's limit",
    415: "request body is not JSON",
    422: "invalid request; each field named",
    429: "over the rate; retry after Retry-After seconds",
    500: "unexpected error",
    502: "a platform refused the request",
    503: "a platform or the store is unavailable, or the service is saturated; "
    "retry after Retry-After seconds",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the problems an operation can answer."""
    return {
        status: {
            "model": Problem,
            "description": DESCRIBED.get(status, "error"),
            "content": {PROBLEM_JSON: {}},
        }
        for status in statuses
    }


_STATUS: list[tuple[type[ConnectorError], int]] = [
    (InvalidInput, 422),
    (NotFound, 404),
    (Conflict, 409),
    (Unauthorized, 401),
    (Forbidden, 403),
    (PayloadTooLarge, 413),
    (UnsupportedMediaType, 415),
    (PlatformRejected, 502),
    (PermanentError, 400),
    (RateLimited, 429),
    (RequestTimeout, 408),
    (TransientError, 503),
]

#: One title per problem type: the title of the error class that answers it.
_TITLES: list[tuple[type[ConnectorError], str]] = [
    (InvalidInput, "Invalid request"),
    (NotFound, "Not found"),
    (Conflict, "Conflict"),
    (Unauthorized, "Unauthorized"),
    (Forbidden, "Forbidden"),
    (PayloadTooLarge, "Request body too large"),
    (UnsupportedMediaType, "Unsupported media type"),
    (PlatformRejected, "Rejected by a platform"),
    (PermanentError, "Bad request"),
    (RateLimited, "Too many requests"),
    (RequestTimeout, "Request timeout"),
    (TransientError, "Service unavailable"),
]


def status_for(error: ConnectorError) -> int:
    return next((status for kind, status in _STATUS if isinstance(error, kind)), 500)


def title_for(error: ConnectorError) -> str:
    return next((title for kind, title in _TITLES if isinstance(error, kind)), "Error")


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
    ids = current_ids()
    body: dict[str, Any] = {
        "type": f"/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "request_id": rid,
        **({"trace_id": ids[0]} if ids else {}),
        **extra,
    }
    headers = {**(headers or {}), **({"X-Request-ID": rid} if rid else {})}
    if ids:
        headers[TRACE_ID_HEADER] = ids[0]
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = list(loc)
    if parts and parts[0] in {"body", "query", "path", "header"}:
        parts = parts[1:]
    return field_path(parts) or "body"


_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route takes on this path (Starlette names only the first route's)."""
    routes = request.app.router.routes
    methods = {
        method
        for method in _METHODS
        if any(r.matches({**request.scope, "method": method})[0] is Match.FULL for r in routes)
    }
    if "GET" in methods:
        methods.add("HEAD")  # answered by gateway.api.limits.HeadAsGet
    return sorted(methods)


def problem_for(request: Request, exc: ConnectorError) -> JSONResponse:
    """The problem+json answer of an error from the tree."""
    status = status_for(exc)
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, TransientError):  # 503, 429, 408: when to come back
        headers["Retry-After"] = str(retry_after_s(request, exc))
    if isinstance(exc, RequestTimeout):
        headers["Connection"] = "close"  # what is left of a slow body is not waited for
    extra: dict[str, Any] = {}
    if isinstance(exc, InvalidInput):
        extra["errors"] = [{"field": exc.field, "reason": exc.reason}]
    if isinstance(exc, StageOutOfOrder):
        extra |= {"current_stage": exc.current_stage, "expected": exc.expected}
    if status >= 500 and not isinstance(exc, Overloaded):  # shedding load is not a failure
        log.warning("request failed", extra={"code": exc.code, "detail": exc.detail})
    return problem(request, status, exc.code, title_for(exc), exc.detail, headers, **extra)


async def send_problem(scope: Scope, receive: Receive, send: Send, exc: ConnectorError) -> None:
    """Answer an ASGI request with ``exc`` as problem+json (for the middleware)."""
    await problem_for(Request(scope, receive), exc)(scope, receive, send)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _field(e["loc"]), "reason": e["msg"].removeprefix("Value error, ")}
            for e in exc.errors()
        ]
        fields = ", ".join(e["field"] for e in errors)
        title = title_for(InvalidInput("body", ""))
        return problem(request, 422, "invalid_input", title, f"invalid: {fields}", errors=errors)

    @app.exception_handler(ConnectorError)
    async def _connector(request: Request, exc: ConnectorError) -> JSONResponse:
        return problem_for(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Starlette's own answers (unknown route, 405 with its Allow header, unreadable body).
        title = HTTPStatus(exc.status_code).phrase
        code = f"http_{exc.status_code}"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return problem(request, exc.status_code, code, title, str(exc.detail), headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return problem(request, 500, "internal", "Internal error", "an unexpected error occurred")
