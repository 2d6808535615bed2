"""Dependencies routes declare with ``Annotated`` aliases.

Authentication reads the clients kept in memory (``gateway.access``): no
query and no pooled connection per request. Each route names the scope it
needs with one of the aliases below (``WriteClient``, ``ReadClient``, ...).
No dependency holds a pooled connection for the whole request: a route opens
its own short sessions (``container.sessions()``) where it needs them, so a
request never holds more than one connection and none while a platform is
being called.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.access import Client
from gateway.bootstrap import Container
from gateway.settings import Scope, Settings
from schemas.errors import Forbidden, Unauthorized

#: Ids the connector hands out (UUIDs); anything else cannot name one of its records.
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
ApplicationId = Annotated[str, Path(pattern=UUID_PATTERN, description="application id (UUID)")]
ResourceId = Annotated[str, Path(pattern=UUID_PATTERN, description="id (UUID)")]

bearer = HTTPBearer(auto_error=False, description="API key of the calling system")


async def get_container(request: Request) -> Container:
    """``async`` although it awaits nothing: FastAPI would run a plain function in a thread
    (a hop per request: measurable on every route)."""
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]


async def authenticated_client(
    container: ContainerDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Client:
    """The calling client; 401 without a valid ``Authorization: Bearer <key>``.

    ``async`` although it awaits nothing: FastAPI would run a plain function in a thread.
    """
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing Authorization: Bearer <key>", code="missing_credentials")
    client = container.clients.authenticate(credentials.credentials)
    if client is None:
        raise Unauthorized("unknown API key", code="bad_credentials")
    return client


ClientDep = Annotated[Client, Depends(authenticated_client)]


def require(scope: Scope) -> Any:
    """A dependency: the calling client, if its scopes include ``scope`` (else 403)."""

    async def scoped(client: ClientDep) -> Client:
        if not client.may(scope):
            raise Forbidden(f"client {client.name!r} lacks the scope {scope!r}")
        return client

    scoped.__name__ = f"require_{scope.replace(':', '_')}"
    return Depends(scoped)


WriteClient = Annotated[Client, require("applications:write")]
ReadClient = Annotated[Client, require("applications:read")]
EvidenceClient = Annotated[Client, require("evidence:read")]
OpsClient = Annotated[Client, require("ops:read")]
ReplayClient = Annotated[Client, require("ops:replay")]
AuditClient = Annotated[Client, require("audit:read")]


def docs_public(settings: Settings) -> bool:
    """Whether /docs, /openapi.json and the detail of /readyz need no key."""
    public = settings.security.public_docs
    return settings.environment == "sandbox" if public is None else public


async def optional_ops_client(request: Request, container: ContainerDep) -> Client | None:
    """The caller if it presents a key with ``ops:read``; None otherwise (never a 401).

    Read from the header directly: the operation stays public in the OpenAPI document.
    """
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key:
        return None
    client = container.clients.authenticate(key.strip())
    return client if client is not None and client.may("ops:read") else None


async def show_detail(
    container: ContainerDep,
    client: Annotated[Client | None, Depends(optional_ops_client)],
) -> bool:
    """The detail of /readyz: public by the setting, else for a client with ``ops:read``."""
    return docs_public(container.settings) or client is not None


ReadyDetailDep = Annotated[bool, Depends(show_detail)]
