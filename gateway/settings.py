"""Settings, read from the environment with the prefix ``YWTB_``.

Nested per concern; one underscore separates the concern from the field, so
``YWTB_KAFKA_BOOTSTRAP`` is ``kafka.bootstrap`` and ``YWTB_LICENCE_URL`` is
``licence.url``. Settings are read by ``load_settings()`` only, never at import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER = "change-me"


class StoreSettings(BaseModel):
    url: str = Field(
        "sqlite+aiosqlite:///var/ywtb.db",
        description="SQLAlchemy async URL: sqlite+aiosqlite:///path or postgresql+asyncpg://…",
    )
    schema_name: str | None = Field(
        None, description="PostgreSQL schema to use (search_path); None for the default"
    )
    pool_size: int = Field(5, description="connections kept open (PostgreSQL)")


class KafkaSettings(BaseModel):
    bootstrap: str | None = Field(
        None,
        description="Kafka bootstrap servers, comma separated; unset: the sandbox starts its own",
    )
    partitions: int = Field(3, description="partitions of each topic created on start")
    replication_factor: int = Field(1, description="replication factor of created topics")
    client_id: str = Field("ywtb-connector", description="Kafka client id")
    request_timeout_s: float = Field(10.0, description="producer request timeout")
    idempotent_producer: bool = Field(
        False,
        description=(
            "enable the idempotent producer (real Kafka only; the development broker lacks it): "
            "keeps per-key order even when a batch fails after retries"
        ),
    )


class RelaySettings(BaseModel):
    batch_size: int = Field(200, description="outbox rows published per round")
    poll_interval_s: float = Field(0.2, description="pause when the outbox is empty")
    lanes: int = Field(8, description="ordering lanes: rows of one key always share a lane")
    lease_s: float = Field(15.0, description="how long a relay owns a lane without renewing")
    backoff_max_s: float = Field(5.0, description="longest pause while the broker is unreachable")


class WorkerSettings(BaseModel):
    poll_timeout_ms: int = Field(500, description="how long one poll waits for messages")
    max_records: int = Field(100, description="messages fetched per poll")
    in_place_attempts: int = Field(3, description="tries of a transient failure before .retry")
    in_place_backoff_max_s: float = Field(5.0, description="longest pause between in-place tries")
    retry_delays_s: list[float] = Field(
        default_factory=lambda: [5.0, 30.0, 120.0],
        description="delays of the rounds through <topic>.retry; after the last, <topic>.dlq",
    )


class SecuritySettings(BaseModel):
    api_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='internal API clients as JSON {"client-name": "key"}; stored hashed',
    )


class SandboxSettings(BaseModel):
    api_key: SecretStr = Field(
        SecretStr("sandbox-key"), description="API key the sandbox accepts (client 'sandbox')"
    )
    permit_decision_delay_s: float = Field(
        5.0, description="how long the simulated road authority takes to decide"
    )


class PlatformSettings(BaseModel):
    """What every outbound platform client has: where, how long, how often."""

    url: str = Field("http://127.0.0.1:0", description="base URL of the platform")
    timeout_s: float = Field(5.0, description="timeout of one call")
    attempts: int = Field(3, description="tries of one call on transient errors")


class LicenceSettings(PlatformSettings):
    """电子证照库 (electronic licence library), SOAP with WS-Security UsernameToken."""

    username: str = Field("ywtb-connector", description="WS-Security user name")
    password: SecretStr = Field(SecretStr(PLACEHOLDER), description="WS-Security password")


class ProjectSettings(PlatformSettings):
    """投资项目在线审批监管平台 (investment project approval platform), signed REST."""

    app_id: str = Field("ywtb-connector", description="our app id on the platform")
    app_secret: SecretStr = Field(SecretStr(PLACEHOLDER), description="app secret for signing")
    algorithm: str = Field("hmac-sha256", description="signature algorithm: hmac-sha256, hmac-sm3")


class SignedPlatformSettings(PlatformSettings):
    """A platform we call with signed requests and that calls us back signed."""

    app_id: str = Field("ywtb-connector", description="our app id on the platform")
    app_secret: SecretStr = Field(
        SecretStr(PLACEHOLDER),
        description="our signing key (shared secret, or SM2 private key hex)",
    )
    algorithm: str = Field("hmac-sha256", description="hmac-sha256, hmac-sm3 or sm2-sm3")
    callback_app_id: str = Field(
        "platform", description="the app id the platform signs callbacks with"
    )
    callback_key: SecretStr = Field(
        SecretStr(PLACEHOLDER),
        description="key that verifies its callbacks (shared secret, or its SM2 public key hex)",
    )
    callback_algorithm: str = Field("hmac-sha256", description="algorithm of its callbacks")
    callback_window_s: float = Field(300.0, description="accepted clock difference of callbacks")


class PermitSettings(SignedPlatformSettings):
    """占掘路行政审批: the road authority's permit platform."""


class YwtbSettings(SignedPlatformSettings):
    """一网通办: case callbacks in, case status pushes out."""

    item_code: str = Field("310100-GDYD-001", description="事项编码 of 一证办电 on 一网通办")


class MarketingSettings(PlatformSettings):
    """营销系统: the utility's marketing system (SOAP, WS-Security UsernameToken)."""

    username: str = Field("ywtb-connector", description="WS-Security user name")
    password: SecretStr = Field(SecretStr(PLACEHOLDER), description="WS-Security password")


class EvidenceSettings(BaseModel):
    budget_s: float = Field(3.0, description="time an application request waits for evidence")
    max_age_s: float = Field(
        86400.0, description="stored evidence older than this is fetched again"
    )


class TracingSettings(BaseModel):
    """W3C trace context (OpenTelemetry): ids always propagate; spans are exported only when
    ``enabled`` with an ``otlp_endpoint``."""

    enabled: bool = Field(
        False,
        description=(
            "export spans over OTLP/HTTP; off, trace ids are still made, propagated in headers, "
            "outbox rows and Kafka messages and written in every log line"
        ),
    )
    otlp_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP traces URL, e.g. http://collector:4318/v1/traces; unset: no export",
    )
    service_name: str = Field("ywtb-connector", description="service.name of exported spans")
    sample_ratio: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="share of new traces recorded when exporting (a caller's decision is kept)",
    )

    @model_validator(mode="after")
    def _endpoint_when_enabled(self) -> TracingSettings:
        if self.enabled and not self.otlp_endpoint:
            raise ValueError("tracing.enabled needs YWTB_TRACING_OTLP_ENDPOINT")
        return self


class DeadlineSettings(BaseModel):
    """The customer's clock: time limits, warnings and chasing (催办)."""

    thresholds: list[float] = Field(
        default_factory=lambda: [0.5, 0.8, 1.0],
        description=(
            "shares of a time limit that raise one event each: below 1 deadline_warning, "
            "1.0 deadline_overdue (passed, not reached)"
        ),
    )
    warning_share: float = Field(
        0.8, description="share of the limit from which an application's state is 'warning'"
    )
    interval_s: float = Field(60.0, description="how often the deadline job evaluates")
    batch_size: int = Field(500, description="open applications read per query of the job")
    calendar_files: list[Path] = Field(
        default_factory=list,
        description=(
            "more calendar files (schemas/deadlines.py documents the format), e.g. a new year; "
            "a file for a year already shipped replaces it"
        ),
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="YWTB_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="ignore",
    )

    environment: Literal["sandbox", "production"] = Field(
        "sandbox", description="production refuses placeholder secrets"
    )
    log_level: str = Field("INFO", description="root log level")
    store: StoreSettings = Field(default_factory=StoreSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    relay: RelaySettings = Field(default_factory=RelaySettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    licence: LicenceSettings = Field(default_factory=LicenceSettings)
    project: ProjectSettings = Field(default_factory=ProjectSettings)
    evidence: EvidenceSettings = Field(default_factory=EvidenceSettings)
    permit: PermitSettings = Field(default_factory=PermitSettings)
    ywtb: YwtbSettings = Field(default_factory=YwtbSettings)
    marketing: MarketingSettings = Field(default_factory=MarketingSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    deadlines: DeadlineSettings = Field(default_factory=DeadlineSettings)

    @model_validator(mode="after")
    def _no_placeholders_in_production(self) -> Settings:
        if self.environment == "production":
            secrets = {
                "licence.password": self.licence.password,
                "project.app_secret": self.project.app_secret,
                "permit.app_secret": self.permit.app_secret,
                "permit.callback_key": self.permit.callback_key,
                "ywtb.app_secret": self.ywtb.app_secret,
                "ywtb.callback_key": self.ywtb.callback_key,
                "marketing.password": self.marketing.password,
            }
            bad = [
                name for name, value in secrets.items() if value.get_secret_value() == PLACEHOLDER
            ]
            if bad:
                raise ValueError(f"placeholder secrets in production: {', '.join(bad)}")
        return self


def load_settings() -> Settings:
    """Read settings from the environment."""
    return Settings()
