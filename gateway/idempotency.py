"""``Idempotency-Key``: a client's retry of a creating request answers what the first created.

One table (``idempotency_keys``) serves every operation that takes the header
(applications, permits, progress reports). The key row is written in the
transaction that creates the resource, so concurrent duplicates create one:
the loser's insert fails on the key and it answers the winner's resource. A
key is the client's whatever the operation: reused with another request (a
different body, or another operation or application) it is refused with the
same 422 as a different body.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar, cast

from sqlalchemy import Table, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.store.db import insert_new
from gateway.store.models import IdempotencyKey, utcnow
from schemas.errors import InvalidInput

T = TypeVar("T")


@dataclass(frozen=True)
class Created(Generic[T]):
    """What a creating request answers: the resource, and False if an earlier request made it."""

    resource: T
    created: bool


def request_hash(*parts: str) -> str:
    """The fingerprint of a request: the operation, the resource it acts on and the body."""
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


KEYS = cast(Table, IdempotencyKey.__table__)

#: What a key's first use recorded. Built once, on the table: built per call through the
#: ORM it cost more CPU than the round trip.
_RECALL = select(KEYS.c.request_hash, KEYS.c.application_id, KEYS.c.resource_id).where(
    KEYS.c.client == bindparam("client"), KEYS.c.key == bindparam("key")
)


class Earlier(NamedTuple):
    """What a key's first use recorded."""

    request_hash: str
    application_id: str
    resource_id: str | None


async def recall(session: AsyncSession, client: str, key: str, fingerprint: str) -> Earlier | None:
    """The earlier use of ``key`` by ``client`` (None if unused); 422 if it was another request."""
    found = (await session.execute(_RECALL, {"client": client, "key": key})).first()
    earlier = None if found is None else Earlier(*found)
    if earlier is not None and earlier.request_hash != fingerprint:
        raise InvalidInput("Idempotency-Key", "already used with a different request body")
    return earlier


async def replay(
    session: AsyncSession,
    client: str,
    key: str | None,
    fingerprint: str,
    load: Callable[[AsyncSession, str], Awaitable[T | None]],
) -> Created[T] | None:
    """What the earlier request with ``key`` created (``load``-ed by its resource id), to
    answer again; None without a key, for an unused one, or if its resource is gone; 422 if
    the key was used for another request."""
    if not key:
        return None
    earlier = await recall(session, client, key, fingerprint)
    if earlier is None or earlier.resource_id is None:
        return None
    found = await load(session, earlier.resource_id)
    return None if found is None else Created(found, created=False)


async def remember(
    session: AsyncSession,
    *,
    client: str,
    key: str,
    scope: str,
    fingerprint: str,
    application_id: str,
    resource_id: str,
) -> None:
    """Record the key in the caller's transaction (``IntegrityError`` if it raced another)."""
    await insert_new(
        session,
        IdempotencyKey(
            client=client,
            key=key,
            scope=scope,
            request_hash=fingerprint,
            application_id=application_id,
            resource_id=resource_id,
            created_at=utcnow(),
        ),
    )
