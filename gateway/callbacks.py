"""Verification of signed government callbacks: signature, window, app id, nonce replay.

Every refusal is an ``Unauthorized`` (401 problem+json) and an audit line;
nonces are kept in the database for twice the window, so a replay is refused
by every replica. The order matters: the body (already bounded in size by
``gateway.api.limits``) is verified as bytes, then read as JSON within a
nesting depth, and only a readable body spends its nonce.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import Request
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from adapters import bounded
from adapters.signing import HEADER_APP_ID, verify_signature
from gateway.metrics import CALLBACK_REFUSALS
from gateway.settings import SignedPlatformSettings
from gateway.store.db import Sessions, transaction
from gateway.store.models import Nonce
from schemas.errors import InvalidInput, Unauthorized

audit = logging.getLogger("ywtb.audit")


class CallbackVerifier:
    """Verifies the callbacks of one platform."""

    def __init__(
        self,
        platform: str,
        settings: SignedPlatformSettings,
        sessions: Sessions,
        *,
        max_json_depth: int = bounded.MAX_JSON_DEPTH,
    ) -> None:
        self.platform = platform
        self._settings = settings
        self._sessions = sessions
        self._max_json_depth = max_json_depth

    def _key(self, app_id: str) -> str | None:
        if app_id != self._settings.callback_app_id:
            return None
        return self._settings.callback_key.get_secret_value()

    async def verify(self, request: Request) -> tuple[str, dict[str, Any]]:
        """The verified caller's app id and its JSON object; ``Unauthorized`` if the signature,
        window or nonce is wrong, ``InvalidInput`` if the signed body is not a readable object
        (its nonce then stays unspent)."""
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
            raise
        except InvalidInput as exc:
            audit.warning("callback unreadable", extra={**context, "detail": exc.detail})
            raise
        audit.info("callback verified", extra={**context, "bytes": len(body)})
        return signed.app_id, data

    def _json(self, body: bytes) -> dict[str, Any]:
        try:
            data = bounded.loads(body, max_depth=self._max_json_depth)
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise InvalidInput("body", f"not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidInput("body", "expected a JSON object")
        return data

    async def _claim_nonce(self, app_id: str, nonce: str) -> None:
        now = time.time()
        try:
            async with transaction(self._sessions) as session:
                await session.execute(delete(Nonce).where(Nonce.expires_at < now))
                session.add(
                    Nonce(
                        app_id=app_id,
                        nonce=nonce,
                        expires_at=now + 2 * self._settings.callback_window_s,
                    )
                )
        except IntegrityError as exc:
            raise Unauthorized(f"nonce {nonce!r} was already used", code="replayed_nonce") from exc
