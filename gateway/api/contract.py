"""The OpenAPI document says what the API enforces, and is served public or behind a key.

Every operation lists each status it can answer: the problems of its own
(404, 409, ... declared on the route) and those the shared machinery answers
(authentication 401, scopes 403 and rates 429 on ``/api/``; for a body 400,
408, 413, 415 and 422; 503 wherever the store or a platform is reached), all
as problem+json. ``/openapi.json``, ``/docs`` and ``/redoc`` (gateway.api.docs) follow
``security.public_docs`` (public in the sandbox); otherwise any client's key
opens them.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials

from gateway.api.deps import authenticated_client, bearer, docs_public, get_container
from gateway.api.problems import DESCRIBED, PROBLEM_JSON, Problem

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}},
    429: {
        "Retry-After": {
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
            "description": "seconds to wait before trying again",
        }
    },
}


def _statuses(path: str, operation: dict[str, Any]) -> set[int]:
    """The statuses the shared machinery can answer for this operation."""
    statuses: set[int] = set()
    if path.startswith("/api/"):
        statuses |= {401, 403, 429, 503}
    if path.startswith("/callbacks/"):
        statuses |= {401, 429, 503}
    if "requestBody" in operation:
        statuses |= {400, 408, 413, 415, 422}
    if operation.get("parameters"):
        statuses.add(422)
    if any(p.get("in") == "path" for p in operation.get("parameters", [])):
        statuses.add(404)
    return statuses


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """Add every problem an operation can answer, as problem+json with the Problem schema."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(problem_schema.pop("$defs", {}))
    components["Problem"] = problem_schema
    for path, item in schema.get("paths", {}).items():
        for operation in item.values():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            for status in _statuses(path, operation) | {int(s) for s in responses if s[0] in "45"}:
                response = responses.setdefault(str(status), {})
                response["description"] = DESCRIBED.get(status, response.get("description", ""))
                response["content"] = {PROBLEM_JSON: {"schema": _PROBLEM_REF}}
                if status in _HEADERS:
                    response["headers"] = _HEADERS[status]
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema


async def _docs_access(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """Public by the setting; otherwise any configured client's key (401 without)."""
    if not docs_public(request.app.state.settings):
        await authenticated_client(await get_container(request), credentials)


DocsAccess = Annotated[None, Depends(_docs_access)]


def install(app: FastAPI) -> None:
    """The document (built once) and the routes that serve it."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_problems(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    summary=app.summary,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_json(_access: DocsAccess) -> JSONResponse:
        return JSONResponse(app.openapi())
