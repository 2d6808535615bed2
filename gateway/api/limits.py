"""Limits that keep one caller from taking the service down, as ASGI middleware.

``CallerLimits`` (outer) runs before anything is read: it refuses a peer that
keeps failing authentication, authenticates ``/api/`` calls from the clients
held in memory, and applies each client's and each callback platform's rate
(token buckets; 429 with ``Retry-After``). ``BodyLimit`` (inner) bounds what is
read: the route's limit is checked against ``Content-Length`` first and
counted while the body streams (chunked too), before FastAPI parses it and
before a callback's signature is verified; a body that is not JSON is 415,
one sent too slowly 408. ``HeadAsGet`` answers ``HEAD`` wherever ``GET`` is.

Every refusal is problem+json through ``gateway.api.problems``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.datastructures import Headers
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.access import FailedLogins, RateLimiter
from gateway.api.problems import send_problem
from gateway.settings import LimitsSettings
from schemas.errors import (
    ConnectorError,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
    Unauthorized,
    UnsupportedMediaType,
)

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class CallerLimits:
    """Failed-authentication slow-down per peer, rate per client and per callback platform."""

    def __init__(self, app: ASGIApp, settings: LimitsSettings) -> None:
        self.app = app
        self.settings = settings
        self.rates = RateLimiter()
        self.failures = FailedLogins(settings.auth_failures, settings.auth_failure_window_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self._refusal(scope)
            if refusal is not None:
                await send_problem(scope, receive, send, refusal)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> ConnectorError | None:
        path: str = scope["path"]
        if path.startswith("/callbacks/"):
            if not _routed(scope):  # no bucket per made-up path: the router answers 404
                return None
            platform = path.split("/")[2]
            wait = self.rates.retry_after(f"callback:{platform}", self.settings.callback_rate_per_s)
            return _over_rate(f"callbacks from {platform}", wait)
        if not path.startswith("/api/"):
            return None
        peer = _peer(scope)
        blocked = self.failures.blocked_for(peer)
        if blocked:
            return RateLimited(
                "too many failed authentications from this address", retry_after_s=blocked
            )
        scheme, _, key = Headers(scope=scope).get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key:
            return Unauthorized("missing Authorization: Bearer <key>", code="missing_credentials")
        client = scope["app"].state.container.clients.authenticate(key.strip())
        if client is None:
            self.failures.record(peer)
            return Unauthorized("unknown API key", code="bad_credentials")
        return _over_rate(
            f"client {client.name!r}",
            self.rates.retry_after(f"client:{client.name}", client.rate_per_s),
        )


def _over_rate(who: str, wait_s: int) -> RateLimited | None:
    if not wait_s:
        return None
    return RateLimited(f"{who} over its rate; retry after {wait_s} s", retry_after_s=wait_s)


class BodyLimit:
    """The route's body limit, JSON only, and a deadline for the whole body."""

    def __init__(self, app: ASGIApp, settings: LimitsSettings) -> None:
        self.app = app
        self.settings = settings
        self._by_path = sorted(
            settings.body_max_bytes_by_path.items(), key=lambda item: len(item[0]), reverse=True
        )

    def limit_for(self, path: str) -> int:
        """The longest configured prefix of ``path`` decides; else the default."""
        return next(
            (limit for prefix, limit in self._by_path if path.startswith(prefix)),
            self.settings.body_max_bytes,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in _BODY_METHODS
            or not _routed(scope)  # the router answers 404 or 405; the body is never read
        ):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        limit = self.limit_for(scope["path"])
        declared = headers.get("content-length")
        has_body = (declared is not None and declared != "0") or "transfer-encoding" in headers
        refusal: ConnectorError | None = None
        if has_body and not _accepted(scope["path"], headers.get("content-type", "")):
            refusal = UnsupportedMediaType(
                f"request body must be JSON (application/json), not "
                f"{headers.get('content-type') or 'untyped'}"
            )
        elif declared is not None and declared.isdigit() and int(declared) > limit:
            refusal = _too_large(limit)
        if refusal is not None:
            # Answered unread; uvicorn drops what is still sent of this body.
            await send_problem(scope, receive, send, refusal)
            return
        await self._guarded(scope, receive, send, limit)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        deadline = time.monotonic() + self.settings.body_read_timeout_s
        received = 0
        refusal: ConnectorError | None = None
        started = False

        async def limited_receive() -> Message:
            nonlocal received, refusal
            if refusal is not None:
                raise refusal
            try:
                async with asyncio.timeout_at(_loop_time(deadline)):
                    message = await receive()
            except TimeoutError:
                refusal = RequestTimeout(
                    f"request body not received within {self.settings.body_read_timeout_s:g} s"
                )
                raise refusal from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refusal = _too_large(limit)
                    raise refusal
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refusal is not None and not started:
                return  # the refusal is answered below, whatever the app made of it
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except (PayloadTooLarge, RequestTimeout):
            if refusal is None:
                raise
        if refusal is not None and not started:
            await send_problem(scope, receive, send, refusal)


def _routed(scope: Scope) -> bool:
    """Whether a route takes this method on this path."""
    return any(route.matches(scope)[0] is Match.FULL for route in scope["app"].router.routes)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body over {limit} bytes")


#: Where HTML forms post (the ops console): form bodies are accepted there besides JSON.
FORM_PREFIX = "/ops/"


def _accepted(path: str, content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    form = path.startswith(FORM_PREFIX) and media == "application/x-www-form-urlencoded"
    return form or _is_json(content_type)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _loop_time(monotonic_deadline: float) -> float:
    """A ``time.monotonic`` deadline on the running loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (monotonic_deadline - time.monotonic())


class HeadAsGet:
    """``HEAD`` answered as ``GET`` without the body (the headers, length included, kept)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if not message.get("more_body", False):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await send(message)

        as_get: dict[str, Any] = {**scope, "method": "GET"}
        await self.app(as_get, receive, headers_only)
