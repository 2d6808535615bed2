"""Clients from the settings only, token buckets and the failed-authentication window."""

from __future__ import annotations

from pydantic import SecretStr

from gateway.access import Clients, FailedLogins, RateLimiter
from gateway.settings import ClientSettings, Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def settings(environment: str) -> Settings:
    configured = Settings(environment="sandbox")
    configured.environment = environment  # type: ignore[assignment]
    configured.security.clients = {
        "alpha": ClientSettings(
            keys=[SecretStr("alpha-1"), SecretStr("alpha-2")], scopes=["applications:read"]
        )
    }
    return configured


def test_only_configured_keys_and_the_sandbox_key_only_in_the_sandbox() -> None:
    sandbox, production = (
        Clients.from_settings(settings("sandbox")),
        Clients.from_settings(settings("production")),
    )
    for clients in (sandbox, production):
        assert clients.authenticate("alpha-1").name == "alpha"  # type: ignore[union-attr]
        assert clients.authenticate("alpha-2").name == "alpha"  # type: ignore[union-attr]
        assert clients.authenticate("alpha-3") is None
    assert sandbox.authenticate("sandbox-key").sees_all  # type: ignore[union-attr]
    assert production.authenticate("sandbox-key") is None


def test_a_bucket_allows_its_rate_and_says_how_long_to_wait() -> None:
    clock = Clock()
    rates = RateLimiter(clock=clock)
    assert [rates.retry_after("c", 2) for _ in range(3)] == [0, 0, 1]
    clock.now += 0.5
    assert rates.retry_after("c", 2) == 0
    # A slow client (one request in ten seconds) waits whole seconds.
    assert [rates.retry_after("d", 0.1) for _ in range(2)] == [0, 10]


def test_a_peer_is_refused_after_its_failures_until_they_leave_the_window() -> None:
    clock = Clock()
    failures = FailedLogins(limit=3, window_s=60, clock=clock)
    for _ in range(3):
        assert failures.blocked_for("10.0.0.1") == 0
        failures.record("10.0.0.1")
    assert failures.blocked_for("10.0.0.1") == 60
    assert failures.blocked_for("10.0.0.2") == 0
    clock.now += 60
    assert failures.blocked_for("10.0.0.1") == 0
