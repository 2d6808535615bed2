"""Console sessions: a signed cookie naming the client, and the CSRF token of its forms.

The cookie holds no key: the client's name, a fingerprint of its current key
hash (a changed or removed key ends the session), an expiry and a nonce,
signed with HMAC-SHA256 under the console's secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

COOKIE = "ywtb_ops_session"


def _mac(secret: bytes, *parts: str) -> str:
    return hmac.new(secret, "\x1f".join(parts).encode(), hashlib.sha256).hexdigest()


def fingerprint(secret: bytes, key_hash: str) -> str:
    return _mac(secret, "key", key_hash)[:32]


@dataclass(frozen=True)
class Session:
    client: str
    key_fingerprint: str
    expires_at: float


def issue(secret: bytes, client: str, key_hash: str, ttl_s: float) -> str:
    """A cookie value for ``client`` logged in with the key whose hash is ``key_hash``."""
    payload = {
        "c": client,
        "f": fingerprint(secret, key_hash),
        "e": round(time.time() + ttl_s),
        "n": secrets.token_hex(8),
    }
    body = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()
    return f"{body}.{_mac(secret, 'session', body)}"


def verify(secret: bytes, value: str) -> Session | None:
    """The session in a cookie value, or None if it is forged, malformed or expired."""
    body, _, mac = value.partition(".")
    if not mac or not hmac.compare_digest(mac, _mac(secret, "session", body)):
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(body.encode()))
        session = Session(str(payload["c"]), str(payload["f"]), float(payload["e"]))
    except (ValueError, KeyError, TypeError):
        return None
    return session if session.expires_at > time.time() else None


def csrf_token(secret: bytes, binding: str) -> str:
    """The form token of a session (bound to its cookie value, or to a Bearer key's hash)."""
    return _mac(secret, "csrf", binding)


def csrf_ok(secret: bytes, binding: str, token: str) -> bool:
    return hmac.compare_digest(csrf_token(secret, binding), token)
