"""Settings, read from the environment with the prefix ``YWTB_``.

Nested per concern; one underscore separates the concern from the field, so
``YWTB_KAFKA_BOOTSTRAP`` is ``kafka.bootstrap`` and ``YWTB_LICENCE_URL`` is
``licence.url``. Settings are read by ``load_settings()`` only, never at import.
"""

from __future__ import annotations

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


#: Development keys of the sandbox and the tests (public, so production refuses them).
SANDBOX_DATA_KEYS = {"sandbox-1": "fb02588b9858141b6580e43357f37c38"}
SANDBOX_INDEX_KEY = "2f12ed844f1e7a48142c17811faa29e8fb02588b9858141b6580e43357f37c38"
SANDBOX_AUDIT_PRIVATE_KEY = "ba00a88154fc946abccb5e8845416815b764d58b46ae63bc58072f50f8e1092d"
SANDBOX_AUDIT_PUBLIC_KEY = (
    "044e2c316cedc54664bfc3277fff61b3183e1c60e3cd7aa08f24ea16568998f2ee"
    "18c0b5ccdfbf0cdb57b3c5281ee5cb409d2502948696370bc2b900b5f79699f2"
)


class ProtectionSettings(BaseModel):
    """Personal data at rest (field encryption, blind index) and the exchange log's keys."""

    keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description=(
            'data keys as JSON {"<key id>": "<hex key>"} (128-bit for sm4-gcm, 256-bit for '
            "aes-256-gcm); keep retired keys until `ywtb keys rotate` has run; "
            "unset in the sandbox: development keys"
        ),
    )
    current_key_id: str | None = Field(
        None, description="the key id new values are encrypted under (default: the only key)"
    )
    algorithm: Literal["sm4-gcm", "aes-256-gcm"] = Field(
        "sm4-gcm", description="cipher of new values: sm4-gcm (GB/T 32907) or aes-256-gcm"
    )
    index_key: SecretStr = Field(
        SecretStr(""), description="hex key of the blind index (HMAC-SM3), at least 128 bits"
    )
    audit_private_key: SecretStr = Field(
        SecretStr(""), description="SM2 private key (64 hex) that signs exchange-log checkpoints"
    )
    audit_public_key: str = Field(
        "", description="SM2 public key (04‖X‖Y hex) that verifies exchange-log checkpoints"
    )
    audit_checkpoint_every: int = Field(
        100, ge=1, description="exchange-log records between two signed checkpoints"
    )
    audit_checkpoint_interval_s: float = Field(
        60.0, gt=0, description="longest time a new exchange-log record waits for a checkpoint"
    )
    audit_queue_size: int = Field(
        10_000, ge=1, description="exchange-log records buffered in memory before callers wait"
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

    app_key: str = Field("ywtb-connector", description="app key issued by the platform")
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
    protection: ProtectionSettings = Field(default_factory=ProtectionSettings)

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

    @model_validator(mode="after")
    def _protection_keys(self) -> Settings:
        """Production refuses to start without its own keys; the sandbox gets development ones."""
        protection = self.protection
        if self.environment == "production":
            sandbox_keys = set(SANDBOX_DATA_KEYS.values()) | {
                SANDBOX_INDEX_KEY,
                SANDBOX_AUDIT_PRIVATE_KEY,
            }
            missing = [
                name
                for name, given in {
                    "protection.keys": [k.get_secret_value() for k in protection.keys.values()],
                    "protection.index_key": [protection.index_key.get_secret_value()],
                    "protection.audit_private_key": [
                        protection.audit_private_key.get_secret_value()
                    ],
                    "protection.audit_public_key": [protection.audit_public_key],
                }.items()
                if not all(given) or not given or set(given) & sandbox_keys
            ]
            if missing:
                raise ValueError(f"production needs its own keys: {', '.join(missing)}")
        else:
            if not protection.keys:
                protection.keys = {k: SecretStr(v) for k, v in SANDBOX_DATA_KEYS.items()}
            if not protection.index_key.get_secret_value():
                protection.index_key = SecretStr(SANDBOX_INDEX_KEY)
            if not protection.audit_private_key.get_secret_value():
                protection.audit_private_key = SecretStr(SANDBOX_AUDIT_PRIVATE_KEY)
                protection.audit_public_key = SANDBOX_AUDIT_PUBLIC_KEY
        if protection.current_key_id is None and len(protection.keys) == 1:
            protection.current_key_id = next(iter(protection.keys))
        if protection.current_key_id not in protection.keys:
            raise ValueError("protection.current_key_id must name one of protection.keys")
        return self


def load_settings() -> Settings:
    """Read settings from the environment."""
    return Settings()
