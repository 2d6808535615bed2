"""What a platform declares about itself, once, in ``adapters/<name>/platform.py``.

A ``Platform`` names its settings model (read from ``YWTB_<NAME>_<FIELD>``),
the port it fills (the ``Container`` attribute the core reaches it by), how its
client is built from its settings, the shared HTTP client and its breaker, how
its simulator is built for the sandbox and the test fixtures, and, for a
platform that calls us back, its ``Callback``: route, decoder to a canonical
model and acknowledgement. ``adapters/registry.py`` lists the platforms; the
core iterates that list and never imports a platform's own modules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx
from fastapi import FastAPI
from pydantic import BaseModel, Field, SecretStr

from adapters.resilience import CircuitBreaker
from adapters.simulation import SimulatorControl
from schemas.seed import Seed

#: The default of every secret: production refuses to start while one is left.
PLACEHOLDER = "change-me"


class PlatformSettings(BaseModel):
    """What every outbound platform client has: where, how long, how often."""

    url: str = Field("http://127.0.0.1:0", description="base URL of the platform")
    timeout_s: float = Field(5.0, description="timeout of one call")
    attempts: int = Field(3, description="tries of one call on transient errors")

    def placeholders(self) -> list[str]:
        """The names of the secrets still at ``PLACEHOLDER``."""
        return [
            name
            for name in type(self).model_fields
            if isinstance(value := getattr(self, name), SecretStr)
            and value.get_secret_value() == PLACEHOLDER
        ]

    def credentials(self) -> dict[str, Any]:
        """How we authenticate to the platform, as its client and its simulator take it."""
        return {}


class SoapSettings(PlatformSettings):
    """A SOAP platform: WS-Security UsernameToken."""

    username: str = Field("ywtb-connector", description="WS-Security user name")
    password: SecretStr = Field(SecretStr(PLACEHOLDER), description="WS-Security password")

    def credentials(self) -> dict[str, Any]:
        return {"username": self.username, "password": self.password.get_secret_value()}


class SigningSettings(PlatformSettings):
    """A platform we call with signed requests (``adapters.signing``)."""

    app_id: str = Field("ywtb-connector", description="our app id on the platform")
    app_secret: SecretStr = Field(
        SecretStr(PLACEHOLDER),
        description="our signing key (shared secret, or SM2 private key hex)",
    )
    algorithm: str = Field("hmac-sha256", description="hmac-sha256, hmac-sm3 or sm2-sm3")

    def credentials(self) -> dict[str, Any]:
        return {
            "app_id": self.app_id,
            "app_secret": self.app_secret.get_secret_value(),
            "algorithm": self.algorithm,
        }


class SignedPlatformSettings(SigningSettings):
    """A platform we call with signed requests and that calls us back signed."""

    callback_app_id: str = Field(
        "platform", description="the app id the platform signs callbacks with"
    )
    callback_key: SecretStr = Field(
        SecretStr(PLACEHOLDER),
        description="key that verifies its callbacks (shared secret, or its SM2 public key hex)",
    )
    callback_algorithm: str = Field("hmac-sha256", description="algorithm of its callbacks")
    callback_window_s: float = Field(300.0, description="accepted clock difference of callbacks")


C = TypeVar("C")


def client_of(
    client: Callable[..., C],
) -> Callable[[PlatformSettings, httpx.AsyncClient, CircuitBreaker], C]:
    """How a platform client (a ``SoapClient`` or ``SignedRestClient`` subclass) is built
    from its settings: its credentials, where, how long, how often, its breaker."""

    def build(settings: PlatformSettings, http: httpx.AsyncClient, breaker: CircuitBreaker) -> C:
        return client(
            http=http,
            base_url=settings.url,
            timeout_s=settings.timeout_s,
            attempts=settings.attempts,
            breaker=breaker,
            **settings.credentials(),
        )

    return build


@dataclass(frozen=True)
class Simulated:
    """What a simulator is started with, in the sandbox and in the test fixtures."""

    seed: Seed
    api_url: str  # the connector's API, where a platform posts its callbacks
    control: SimulatorControl
    decision_delay_s: float  # how long a platform that decides later takes
    callback_backoff_s: float  # first pause before an undelivered callback is retried


M = TypeVar("M", bound=BaseModel)
S = TypeVar("S", bound=PlatformSettings)


@dataclass(frozen=True)
class Callback(Generic[M]):
    """What a platform posts to us, signed, and what it expects back."""

    path: str  # our route, e.g. /callbacks/permits
    route_name: str  # the route's name (its OpenAPI operation id)
    summary: str  # one line of the OpenAPI document
    model: type[M]  # the canonical model the core receives
    decode: Callable[[dict[str, Any]], M]  # raises ``FieldError`` / ``ValueError``
    ack: Mapping[str, str]  # the body of our answer once the callback is taken


@dataclass(frozen=True)
class Platform(Generic[S]):
    """One external platform, as the core sees it."""

    name: str  # its folder, its settings field (YWTB_<NAME>_...), its breaker, its errors
    settings_model: type[S]
    role: str  # the port it fills: the Container attribute
    client: Callable[[S, httpx.AsyncClient, CircuitBreaker], object]
    simulator: Callable[[S, Simulated], FastAPI]
    callback: Callback[Any] | None = None

    def settings_of(self, settings: BaseModel) -> S:
        """Its part of the connector's settings (``settings.<name>``)."""
        mine = getattr(settings, self.name)
        if not isinstance(mine, self.settings_model):
            raise TypeError(f"settings.{self.name} is not a {self.settings_model.__name__}")
        return mine

    def build_client(
        self, settings: BaseModel, http: httpx.AsyncClient, breaker: CircuitBreaker
    ) -> object:
        return self.client(self.settings_of(settings), http, breaker)

    def build_simulator(self, settings: BaseModel, simulated: Simulated) -> FastAPI:
        return self.simulator(self.settings_of(settings), simulated)
