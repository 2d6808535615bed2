"""Verification of signed government callbacks: signature, window, app id, nonce replay.

Every refusal is an ``Unauthorized`` (401 problem+json) and an audit line;
nonces are kept in the database for twice the window, so a replay is refused
by every replica. The order matters: the body (already bounded in size by
``gateway.api.limits``) is verified as bytes, then read as JSON within a
nesting depth, and only a readable body spends its nonce.
"""

from __future__ import annotations

import base64
import logging
import time
from contextvars import ContextVar
from dataclasses import replace
from typing import Any

from fastapi import Request
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from adapters import bounded
from adapters.platform import SignedPlatformSettings
from adapters.signing import HEADER_APP_ID, SIGNING_HEADERS, verify_signature
from gateway.audit import AuditLog, Exchange, digest
from gateway.metrics import CALLBACK_REFUSALS
from gateway.store.db import Sessions, insert_new, transaction
from gateway.store.models import Nonce, ReceivedCallback, utcnow
from schemas.errors import InvalidInput, Unauthorized

audit = logging.getLogger("ywtb.audit")

#: The signed request of the callback being handled, kept with its ``callbacks`` row.
_signed_request: ContextVar[dict[str, Any] | None] = ContextVar("signed_request", default=None)


def keep_callback(
    session: AsyncSession, platform: str, key: str, app_id: str, body: dict[str, Any]
) -> None:
    """Store a verified callback in the transaction of its effect, with what it was signed
    with (so it can be verified again later). The same ``(platform, key)`` delivered again
    fails that transaction with ``IntegrityError``: its effect was applied before."""
    session.add(
        ReceivedCallback(
            platform=platform,
            callback_key=key,
            app_id=app_id,
            body=body,
            received_at=utcnow(),
            signed_request=_signed_request.get(),
        )
    )


class CallbackVerifier:
    """Verifies the callbacks of one platform."""

    def __init__(
        self,
        platform: str,
        settings: SignedPlatformSettings,
        sessions: Sessions,
        exchanges: AuditLog | None = None,
        *,
        max_json_depth: int = bounded.MAX_JSON_DEPTH,
    ) -> None:
        self.platform = platform
        self._settings = settings
        self._sessions = sessions
        self._max_json_depth = max_json_depth
        self._exchanges = exchanges
        self._purged_at = 0.0  # time.time() of the last purge of expired nonces

    def _key(self, app_id: str) -> str | None:
        if app_id != self._settings.callback_app_id:
            return None
        return self._settings.callback_key.get_secret_value()

    async def verify(self, request: Request) -> tuple[str, dict[str, Any]]:
        """The verified caller's app id and its JSON object; ``Unauthorized`` if the signature,
        window or nonce is wrong, ``InvalidInput`` if the signed body is not a readable object
        (its nonce then stays unspent)."""
        started = time.perf_counter()
        body = await request.body()
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        context = {
            "platform": self.platform,
            "path": request.url.path,
            "app_id": request.headers.get(HEADER_APP_ID, ""),
            "peer": request.client.host if request.client else None,
        }
        try:
            signed = verify_signature(
                request.method,
                target,
                body,
                request.headers,
                lookup_secret=self._key,
                allowed_algorithms={self._settings.callback_algorithm},
                window_s=self._settings.callback_window_s,
            )
            data = self._json(body)
            await self._claim_nonce(signed.app_id, signed.nonce)
        except Unauthorized as exc:
            CALLBACK_REFUSALS.labels(self.platform, exc.code).inc()
            audit.warning(
                "callback refused", extra={**context, "reason": exc.code, "detail": exc.detail}
            )
            await self._record(context, body, f"refused: {exc.code}", started)
            raise
        except InvalidInput as exc:
            audit.warning("callback unreadable", extra={**context, "detail": exc.detail})
            await self._record(context, body, "refused: unreadable", started)
            raise
        audit.info("callback verified", extra={**context, "bytes": len(body)})
        exchange = await self._record(context, body, "verified", started)
        request.state.verified_callback = (self._exchanges, exchange)
        _signed_request.set(
            {
                "method": request.method,
                "target": target,
                "headers": {h: request.headers.get(h) for h in SIGNING_HEADERS},
                "body_base64": base64.b64encode(body).decode("ascii"),
            }
        )
        return signed.app_id, data

    def _json(self, body: bytes) -> dict[str, Any]:
        try:
            data = bounded.loads(body, max_depth=self._max_json_depth)
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise InvalidInput("body", f"not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidInput("body", "expected a JSON object")
        return data

    async def _record(
        self, context: dict[str, Any], body: bytes, outcome: str, started: float
    ) -> Exchange:
        exchange = Exchange(
            actor=f"{self.platform}:{context['app_id'] or '?'}",
            operation=f"callback {context['path']}",
            outcome=outcome,
            duration_ms=round((time.perf_counter() - started) * 1000),
            purpose="callback",
            request_digest=digest(body),
        )
        if self._exchanges is not None:
            await self._exchanges.record(exchange)
        return exchange

    async def _claim_nonce(self, app_id: str, nonce: str) -> None:
        """Spend ``nonce`` (one INSERT). Expired nonces are purged every ``_PURGE_EVERY_S``, not
        per call: concurrent calls do not queue on the same expired rows, and a nonce kept a
        little past its expiry can only refuse more, never let a replay in."""
        now = time.time()
        try:
            async with transaction(self._sessions) as session:
                if now - self._purged_at >= _PURGE_EVERY_S:
                    await session.execute(delete(Nonce).where(Nonce.expires_at < now))
                    self._purged_at = now
                await insert_new(
                    session,
                    Nonce(
                        app_id=app_id,
                        nonce=nonce,
                        expires_at=now + 2 * self._settings.callback_window_s,
                    ),
                )
        except IntegrityError as exc:
            raise Unauthorized(f"nonce {nonce!r} was already used", code="replayed_nonce") from exc


_PURGE_EVERY_S = 10.0


async def record_failed_callback(request: Request, status: int, duration_ms: int) -> None:
    """A verified callback whose handling failed (4xx/5xx) gets a second record saying so."""
    verified = getattr(request.state, "verified_callback", None)
    if verified is None or status < 400:
        return
    exchanges, exchange = verified
    if exchanges is not None:
        await exchanges.record(
            replace(
                exchange, outcome=f"failed: http {status}", duration_ms=duration_ms, time=utcnow()
            )
        )
