"""Who may call the internal API, and how often.

The configured clients (``YWTB_SECURITY_CLIENTS``) are the only truth: at start
their keys are hashed into memory (SHA-256 → client) and nothing else is
consulted, so a client removed from the settings stops working at the next
start, and no request needs the store to be authenticated. The sandbox client
(``YWTB_SANDBOX_API_KEY``, every scope) exists only in the sandbox environment.

Rates are token buckets kept per process (a replica counts its own callers).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.settings import ALL_SCOPES, Scope, Settings

#: The client that owns applications from cases filed on 一网通办.
PLATFORM_CLIENT = "ywtb"


def hash_key(key: str) -> str:
    """API keys are kept as their SHA-256 (keys are random, long and never reused)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Client:
    """An authenticated caller of the internal API."""

    name: str
    scopes: frozenset[Scope]
    rate_per_s: float

    def may(self, scope: Scope) -> bool:
        return scope in self.scopes

    @property
    def sees_all(self) -> bool:
        """Reads every client's applications (and 一网通办's cases)."""
        return "applications:all" in self.scopes


class Clients:
    """The configured clients by the hash of each of their keys."""

    def __init__(self, clients: dict[str, tuple[Client, list[str]]]) -> None:
        self._by_hash = {hash_key(key): client for client, keys in clients.values() for key in keys}

    @classmethod
    def from_settings(cls, settings: Settings) -> Clients:
        configured = {
            name: (
                Client(name, frozenset(config.scopes), config.rate_per_s),
                [key.get_secret_value() for key in config.keys],
            )
            for name, config in settings.security.clients.items()
        }
        if settings.environment == "sandbox":
            sandbox = Client("sandbox", frozenset(ALL_SCOPES), settings.sandbox.rate_per_s)
            configured["sandbox"] = (sandbox, [settings.sandbox.api_key.get_secret_value()])
        return cls(configured)

    def authenticate(self, key: str) -> Client | None:
        """The client holding ``key``, or None."""
        return self._by_hash.get(hash_key(key))

    def keys_of(self, name: str) -> dict[str, Client]:
        """The key hashes of client ``name`` (to check a session made with one of them)."""
        return {h: client for h, client in self._by_hash.items() if client.name == name}


@dataclass
class TokenBucket:
    """``rate_per_s`` tokens a second, up to ``burst``; a request takes one."""

    rate_per_s: float
    burst: float
    tokens: float = -1.0
    updated: float = 0.0

    def take(self, now: float) -> float:
        """0 if a token was taken; else the seconds until one is there."""
        if self.tokens < 0:
            self.tokens, self.updated = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate_per_s)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate_per_s


@dataclass
class RateLimiter:
    """One token bucket per caller name; a bucket holds one second of its rate (at least 1)."""

    clock: Callable[[], float] = time.monotonic
    buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def retry_after(self, caller: str, rate_per_s: float) -> int:
        """0 if the caller may go on; else whole seconds to wait (at least 1)."""
        bucket = self.buckets.get(caller)
        if bucket is None or bucket.rate_per_s != rate_per_s:
            bucket = self.buckets[caller] = TokenBucket(rate_per_s, max(1.0, rate_per_s))
        wait = bucket.take(self.clock())
        return 0 if wait == 0 else max(1, math.ceil(wait))


@dataclass
class FailedLogins:
    """Failed authentications per peer in a sliding window; a peer over ``limit`` waits."""

    limit: int
    window_s: float
    clock: Callable[[], float] = time.monotonic
    failures: dict[str, list[float]] = field(default_factory=dict)

    def _recent(self, peer: str, now: float) -> list[float]:
        kept = [t for t in self.failures.get(peer, []) if now - t < self.window_s]
        if kept:
            self.failures[peer] = kept
        else:
            self.failures.pop(peer, None)
        return kept

    def blocked_for(self, peer: str) -> int:
        """0 if the peer may try; else whole seconds until its oldest failure leaves the window."""
        now = self.clock()
        recent = self._recent(peer, now)
        if len(recent) < self.limit:
            return 0
        return max(1, math.ceil(recent[-self.limit] + self.window_s - now))

    def record(self, peer: str) -> None:
        now = self.clock()
        self.failures.setdefault(peer, []).append(now)
        if len(self.failures) > 10_000:  # bounded: forget the peers with the oldest failures
            for stale in sorted(self.failures, key=lambda p: self.failures[p][-1])[:1000]:
                del self.failures[stale]
