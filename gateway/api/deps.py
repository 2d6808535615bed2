"""Dependencies routes declare with ``Annotated`` aliases.

No dependency holds a pooled connection for the whole request: a route opens
its own short sessions (``container.sessions()``) where it needs them, so a
request never holds more than one connection and none while a platform is
being called.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select

from gateway.bootstrap import Container, hash_key
from gateway.store.models import ApiClient
from schemas.errors import Unauthorized

_bearer = HTTPBearer(auto_error=False, description="API key of the calling system")


def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]


async def authenticated_client(
    container: ContainerDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The name of the calling client; 401 without a valid ``Authorization: Bearer <key>``."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing Authorization: Bearer <key>", code="missing_credentials")
    async with container.sessions() as session:  # closed before the route runs
        client = await session.scalar(
            select(ApiClient.name).where(ApiClient.key_hash == hash_key(credentials.credentials))
        )
    if client is None:
        raise Unauthorized("unknown API key", code="bad_credentials")
    return client


ClientDep = Annotated[str, Depends(authenticated_client)]
