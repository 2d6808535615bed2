"""RFC 9457 problem details for every error, and the one place errors become status codes."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.logs import request_id
from schemas.errors import (
    Conflict,
    ConnectorError,
    InvalidInput,
    NotFound,
    PermanentError,
    PlatformRejected,
    StageOutOfOrder,
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
    current_stage: str | None = Field(
        None, description="stage_out_of_order: where the application stands"
    )
    expected: list[str] | None = Field(
        None, description="stage_out_of_order: the stages that may come next"
    )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the problems an operation can answer."""
    described = {
        401: "missing or bad API key",
        404: "not found",
        409: "conflict with an earlier request",
        422: "invalid request; each field named",
        503: "a platform or the store is unavailable",
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
        status = status_for(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        extra: dict[str, Any] = {}
        if isinstance(exc, InvalidInput):
            extra["errors"] = [{"field": exc.field, "reason": exc.reason}]
        if isinstance(exc, StageOutOfOrder):
            extra |= {"current_stage": exc.current_stage, "expected": exc.expected}
        if status >= 500:
            log.warning("request failed", extra={"code": exc.code, "detail": exc.detail})
        title = type(exc).__name__
        return problem(request, status, exc.code, title, exc.detail, headers, **extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(
            request, exc.status_code, f"http_{exc.status_code}", str(exc.detail), str(exc.detail)
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return problem(request, 500, "internal", "Internal error", "an unexpected error occurred")
