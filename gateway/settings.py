"""Settings, read from the environment with the prefix ``YWTB_``.

Nested per concern; one underscore separates the concern from the field, so
``YWTB_KAFKA_BOOTSTRAP`` is ``kafka.bootstrap`` and ``YWTB_LICENCE_URL`` is
``licence.url``. Settings are read by ``load_settings()`` only, never at import.
Each platform's settings model is declared by the platform (``adapters.registry``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, create_model, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from adapters.registry import PLATFORMS


class StoreSettings(BaseModel):
    url: str = Field(
        "sqlite+aiosqlite:///var/ywtb.db",
        description="SQLAlchemy async URL: sqlite+aiosqlite:///path or postgresql+asyncpg://…",
    )
    schema_name: str | None = Field(
        None, description="PostgreSQL schema to use (search_path); None for the default"
    )
    pool_size: int = Field(5, description="connections kept open in the pool")
    max_overflow: int = Field(
        10, description="connections opened beyond pool_size under load, closed when returned"
    )
    pool_timeout_s: float = Field(
        1.0,
        description=(
            "longest wait for a free pooled connection; then the store counts as unavailable "
            "(the API answers 503 with Retry-After, workers retry)"
        ),
    )
    connect_timeout_s: float = Field(
        5.0, description="longest wait for a new database connection (PostgreSQL)"
    )
    ping_idle_s: float = Field(
        10.0,
        description=(
            "a pooled connection idle this long is pinged before use (PostgreSQL), so one lost "
            "to a restart of the store is replaced unseen; a hot pool is not pinged"
        ),
    )


class ApiSettings(BaseModel):
    """Back-pressure of the HTTP API (``ywtb serve``)."""

    max_in_flight: int = Field(
        16,
        description=(
            "requests handled at once; beyond it they wait in line (max_queued, queue_wait_s) "
            "(/healthz and /readyz are not counted). At most the store's pool_size + "
            "max_overflow, so that saturation is answered at once, not after pool_timeout_s; "
            "raise it (with the pool) on a host with CPU to spare"
        ),
    )
    max_queued: int = Field(
        256,
        ge=0,
        description=(
            "requests that wait in line, first come first served, while max_in_flight are "
            "handled; beyond the line the API answers 503 with Retry-After at once"
        ),
    )
    queue_wait_s: float = Field(
        1.0,
        ge=0,
        description="longest wait in that line; a request still waiting then is answered 503",
    )
    loop_lag_target_s: float = Field(
        0.2,
        description=(
            "while the event loop runs later than this (the machine is short of CPU), the "
            "in-flight limit shrinks below max_in_flight (to half of it at least), and grows "
            "back as it recovers"
        ),
    )
    retry_after_s: int = Field(
        1, description="Retry-After (seconds) of a 503 that carries no better estimate"
    )
    readiness_timeout_s: float = Field(
        2.0, description="longest wait of each /readyz check (store, broker)"
    )


class KafkaSettings(BaseModel):
    bootstrap: str | None = Field(
        None,
        description="Kafka bootstrap servers, comma separated; unset: the sandbox starts its own",
    )
    partitions: int = Field(3, description="partitions of each topic created on start")
    replication_factor: int = Field(1, description="replication factor of created topics")
    client_id: str = Field("ywtb-connector", description="Kafka client id")
    request_timeout_s: float = Field(
        10.0, description="request timeout; also bounds starting a client and committing offsets"
    )
    close_timeout_s: float = Field(
        2.0, description="longest wait for a Kafka client to stop (a down broker is not waited for)"
    )
    idempotent_producer: bool = Field(
        False,
        description=(
            "enable the idempotent producer (real Kafka only; the development broker lacks it): "
            "keeps per-key order even when a batch fails after retries"
        ),
    )


class RelaySettings(BaseModel):
    batch_size: int = Field(200, ge=1, le=2000, description="outbox rows published per round")
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
        description=(
            "delays of the rounds through <topic>.retry; after the last, the delivery is left "
            "'retrying' in the store for the sweeper (only permanent failures go to <topic>.dlq)"
        ),
    )
    broker_check_s: float = Field(
        3.0, description="how often an idle worker checks that the broker and its topics exist"
    )
    reconnect_backoff_max_s: float = Field(
        5.0, description="longest pause between reconnections to an unreachable broker"
    )
    record_every_s: float = Field(
        5.0, description="how often a delivery waiting out an outage records its attempts"
    )


class LoopSettings(BaseModel):
    stall_after_s: float = Field(
        60.0, description="a background loop without progress for this long makes /readyz 503"
    )
    shutdown_s: float = Field(
        4.0,
        description=(
            "on SIGTERM, how long loops may finish the work in hand before they are cancelled "
            "(uncommitted work is redelivered)"
        ),
    )


#: What a client of the internal API may be allowed to do.
Scope = Literal[
    "applications:write",  # submit applications, report progress, request permits
    "applications:read",  # read its own applications, their events and permits
    "applications:all",  # read every client's applications (and 一网通办's cases)
    "evidence:read",  # look up evidence (licences, project approvals)
    "ops:read",  # outbox backlog, dead letters, readiness detail
    "ops:replay",  # replay dead letters
    "audit:read",  # read the exchange log
]
ALL_SCOPES: tuple[Scope, ...] = (
    "applications:write",
    "applications:read",
    "applications:all",
    "evidence:read",
    "ops:read",
    "ops:replay",
    "audit:read",
)


class ClientSettings(BaseModel):
    """One client of the internal API: its keys (two, to rotate), scopes and rate."""

    model_config = ConfigDict(extra="forbid")

    keys: list[SecretStr] = Field(
        min_length=1, max_length=2, description="its API keys (a second one while rotating)"
    )
    scopes: list[Scope] = Field(description="what it may do")
    rate_per_s: float = Field(50.0, gt=0, description="requests per second (token bucket)")


class SecuritySettings(BaseModel):
    clients: dict[str, ClientSettings] = Field(
        default_factory=dict,
        description=(
            'internal API clients as JSON {"<name>": {"keys": [...], "scopes": [...], '
            '"rate_per_s": N}}; the only valid clients (kept hashed, in memory)'
        ),
    )
    public_docs: bool | None = Field(
        None,
        description=(
            "/docs, /openapi.json and the detail of /readyz without a key; "
            "unset: public in the sandbox only"
        ),
    )

    @model_validator(mode="after")
    def _keys_unique(self) -> SecuritySettings:
        keys = [k.get_secret_value() for c in self.clients.values() for k in c.keys]
        if len(keys) != len(set(keys)):
            raise ValueError("security.clients: a key is given to more than one client")
        if "sandbox" in self.clients:
            raise ValueError("security.clients: the name 'sandbox' is the sandbox's own client")
        return self


class LimitsSettings(BaseModel):
    """Limits that keep one caller from taking the service down."""

    body_max_bytes: int = Field(1_048_576, gt=0, description="largest request body (default)")
    body_max_bytes_by_path: dict[str, int] = Field(
        default_factory=dict,
        description='per-route body limits: JSON {"<path prefix>": bytes}; longest prefix wins',
    )
    body_read_timeout_s: float = Field(
        30.0, gt=0, description="time allowed to send a whole request body"
    )
    header_read_timeout_s: float = Field(
        10.0, gt=0, description="time allowed to send a request's headers (slow clients cut)"
    )
    keep_alive_s: int = Field(5, gt=0, description="idle keep-alive connections closed after")
    callback_rate_per_s: float = Field(
        200.0, gt=0, description="callbacks per second accepted from each platform"
    )
    auth_failures: int = Field(
        20, gt=0, description="failed authentications from one peer before it is refused"
    )
    auth_failure_window_s: float = Field(
        60.0, gt=0, description="window in which failed authentications of a peer are counted"
    )
    json_max_depth: int = Field(32, gt=0, description="deepest JSON nesting of a callback body")


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
    audit_batch_wait_s: float = Field(
        0.005,
        ge=0,
        le=1,
        description="how long the exchange-log writer waits after a record for more to append "
        "in the same transaction (the exchanges of one request come a few ms apart)",
    )


class SandboxSettings(BaseModel):
    api_key: SecretStr = Field(
        SecretStr("sandbox-key"), description="API key the sandbox accepts (client 'sandbox')"
    )
    rate_per_s: float = Field(
        500.0, gt=0, description="requests per second of client 'sandbox' (benchmarks use it)"
    )
    permit_decision_delay_s: float = Field(
        5.0, description="how long the simulated road authority takes to decide"
    )
    callback_backoff_s: float = Field(
        1.0, description="first pause before a simulated platform retries an undelivered callback"
    )


class EvidenceSettings(BaseModel):
    budget_s: float = Field(3.0, description="time an application request waits for evidence")
    max_age_s: float = Field(
        86400.0, description="stored evidence older than this is fetched again"
    )
    reuse_cache_s: float = Field(
        10.0, ge=0.0, description="a stored record read is reused this long without a query"
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


class MetricsSettings(BaseModel):
    """``/metrics`` and the ops figures behind it (``gateway.opsdata``)."""

    interval_s: float = Field(
        15.0, description="how often store and Kafka figures (lag, backlog, ...) are gathered"
    )
    count_cap: int = Field(
        100_000, description="applications per status are counted up to this many (bounded)"
    )
    port: int | None = Field(
        None,
        description=(
            "serve /metrics without authentication on this port (for a Prometheus on a "
            "private network); unset: only on the API port, with a Bearer key"
        ),
    )
    host: str = Field("127.0.0.1", description="address of the separate metrics port")


class DeadLetterSettings(BaseModel):
    """Replaying dead letters (``ywtb dlq replay``, ``POST /api/v1/ops/dead-letters/replay``)."""

    replay_rate_per_s: float = Field(
        10.0, gt=0, description="dead letters sent back per second at most, per process"
    )
    max_replays: int = Field(
        3,
        ge=1,
        description="loop guard: a letter replayed this many times and still dead is held back",
    )
    max_batch: int = Field(500, ge=1, description="event ids one replay request may name")
    read_timeout_s: float = Field(
        10.0, description="longest wait reading the dead-letter topics to their end"
    )


class ConsoleSettings(BaseModel):
    """The ops console at ``/ops``."""

    session_secret: SecretStr | None = Field(
        None,
        description=(
            "key that signs console session cookies (HMAC-SHA256); unset: a random key per "
            "process, so sessions end with a restart and do not cross replicas"
        ),
    )
    session_ttl_s: float = Field(8 * 3600.0, description="how long a console login lasts")
    stuck_after_s: float = Field(
        3600.0, description="an application waiting for evidence this long is listed as stuck"
    )


class SweeperSettings(BaseModel):
    """The sweeper: drives unfinished work found in the store again (gateway.sweeper)."""

    interval_s: float = Field(30.0, description="pause between two sweeps")
    grace_s: float = Field(
        300.0, description="work younger than this is left to the workers and their retries"
    )
    lease_s: float = Field(
        120.0, description="how long a claimed item is one sweeper's (longer than one drive)"
    )
    backoff_initial_s: float = Field(10.0, description="pause after an item's first failure")
    backoff_max_s: float = Field(900.0, description="longest pause between an item's attempts")
    batch_size: int = Field(200, description="items driven at most per sweep")


class StageSettings(BaseModel):
    """Stage reports (POST /api/v1/applications/{id}/progress)."""

    clock_skew_s: float = Field(
        300.0, description="how far in the future a reported occurred_at may be (clock skew)"
    )


class CoreSettings(BaseSettings):
    """Everything but the platforms; ``Settings`` adds one field per registered platform."""

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
    api: ApiSettings = Field(default_factory=ApiSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    relay: RelaySettings = Field(default_factory=RelaySettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    loops: LoopSettings = Field(default_factory=LoopSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    evidence: EvidenceSettings = Field(default_factory=EvidenceSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    deadlines: DeadlineSettings = Field(default_factory=DeadlineSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    dlq: DeadLetterSettings = Field(default_factory=DeadLetterSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    sweeper: SweeperSettings = Field(default_factory=SweeperSettings)
    stages: StageSettings = Field(default_factory=StageSettings)
    protection: ProtectionSettings = Field(default_factory=ProtectionSettings)

    @model_validator(mode="after")
    def _no_placeholders_in_production(self) -> CoreSettings:
        if self.environment == "production":
            bad = [
                f"{platform.name}.{secret}"
                for platform in PLATFORMS
                for secret in platform.settings_of(self).placeholders()
            ]
            if bad:
                raise ValueError(f"placeholder secrets in production: {', '.join(bad)}")
        return self

    @model_validator(mode="after")
    def _protection_keys(self) -> CoreSettings:
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


def _with_platforms() -> type[CoreSettings]:
    """``CoreSettings`` plus ``<name>: <its settings model>`` for each platform of the registry
    (so ``YWTB_LICENCE_URL`` is ``licence.url``)."""
    fields: dict[str, Any] = {
        platform.name: (platform.settings_model, Field(default_factory=platform.settings_model))
        for platform in PLATFORMS
    }
    return create_model("Settings", __base__=CoreSettings, __module__=__name__, **fields)


if TYPE_CHECKING:
    Settings = CoreSettings
else:
    Settings = _with_platforms()


def load_settings() -> Settings:
    """Read settings from the environment."""
    return Settings()
