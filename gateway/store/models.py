"""Tables. Changes go through an Alembic migration in ``migrations/versions``."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    String,
    TypeDecorator,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import DeclarativeBase, Mapped, Mapper, mapped_column

from gateway.protect import EncryptedJSON, EncryptedText, blind_index

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend (SQLite would hand back naive datetimes)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: store times in UTC with tzinfo")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UtcDateTime(), dict[str, Any]: JSON}


class ApiClient(Base):
    """A record of API client names from earlier versions; never read to authenticate.

    The configured clients (``YWTB_SECURITY_CLIENTS``, ``gateway.access``) are the only truth.
    """

    __tablename__ = "api_clients"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(500), default="*")
    created_at: Mapped[datetime]


class OutboxRow(Base):
    """An event waiting for (or done with) publication; ``seq`` is the publication order."""

    __tablename__ = "outbox"
    __table_args__ = (
        # The relay's pending rows in publication order: a round reads its batch off the front
        # of this index, however long the backlog or the history.
        Index(
            "ix_outbox_unsent",
            "seq",
            postgresql_where=text("sent_at IS NULL"),
            sqlite_where=text("sent_at IS NULL"),
        ),
    )

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    topic: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[int] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str | None] = mapped_column(String(200), index=True)
    time: Mapped[datetime]
    data: Mapped[dict[str, Any]] = mapped_column(EncryptedJSON("outbox.data"))
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    traceparent: Mapped[str | None] = mapped_column(
        String(55), comment="W3C trace context of the transaction that wrote the event"
    )


class OutboxLane(Base):
    """Ordering lane of the relay: one relay at a time owns a lane (rows with key_hash % lanes)."""

    __tablename__ = "outbox_lanes"

    lane: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    owner: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[float] = mapped_column(Float, default=0.0)


class InboxRow(Base):
    """An event a consumer has applied; its presence makes a redelivery a no-op."""

    __tablename__ = "inbox"

    consumer: Mapped[str] = mapped_column(String(100), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    processed_at: Mapped[datetime]


class TimelineEntry(Base):
    """One line of an application's story, written by the ``timeline`` worker."""

    __tablename__ = "timeline"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    application_id: Mapped[str] = mapped_column(String(64), index=True)
    event_id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(200))
    time: Mapped[datetime]
    data: Mapped[dict[str, Any]] = mapped_column(EncryptedJSON("timeline.data"))
    recorded_at: Mapped[datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Application(Base):
    """A 一证办电 application and its dossier status."""

    __tablename__ = "applications"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(32), index=True)
    credential_type: Mapped[str] = mapped_column(String(16))
    credential_no: Mapped[str] = mapped_column(EncryptedText("applications.credential_no"))
    credential_index: Mapped[str | None] = mapped_column(
        String(64), index=True, comment="blind index of credential_type:credential_no"
    )
    request: Mapped[dict[str, Any]] = mapped_column(
        EncryptedJSON("applications.request"), comment="the validated request body"
    )
    procedures: Mapped[list[str]] = mapped_column(JSON)
    time_limit_days: Mapped[int] = mapped_column(Integer)
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    owner: Mapped[str] = mapped_column(
        String(100), index=True, comment="the API client that created it (ywtb: 一网通办 cases)"
    )
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    received_at: Mapped[datetime] = mapped_column(
        index=True, comment="when the customer applied: the clock starts here"
    )
    dossier_completed_at: Mapped[datetime | None] = mapped_column(
        comment="when the dossier was complete (ready or rejected)"
    )
    closed_at: Mapped[datetime | None] = mapped_column(
        index=True, comment="办结 or 不予受理: the clock stopped"
    )
    deadline_state: Mapped[str | None] = mapped_column(
        String(16), index=True, comment="as of the last evaluation (stage report or deadline job)"
    )
    due_at: Mapped[datetime | None] = mapped_column(comment="as of the last evaluation")


class ApplicationEvidence(Base):
    """One piece of evidence an application requires, and where it stands."""

    __tablename__ = "application_evidence"

    application_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    subject: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    evidence_id: Mapped[int | None] = mapped_column(BigInteger)
    record: Mapped[dict[str, Any] | None] = mapped_column(
        EncryptedJSON("application_evidence.record"),
        comment="the evidence as checked for this application (a snapshot)",
    )
    updated_at: Mapped[datetime]
    reused: Mapped[bool | None] = mapped_column(
        Boolean, comment="true: taken from the evidence store; false: fetched for this application"
    )


class StoredEvidence(Base):
    """The evidence store: the latest record fetched from a platform, with its validity."""

    __tablename__ = "evidence"
    __table_args__ = (UniqueConstraint("kind", "subject"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(64))
    source_platform: Mapped[str] = mapped_column(String(200))
    issuing_authority: Mapped[str | None] = mapped_column(String(200))
    document_no: Mapped[str | None] = mapped_column(String(100))
    issued_on: Mapped[date | None]
    valid_from: Mapped[date | None]
    valid_to: Mapped[date | None]
    fetched_at: Mapped[datetime]
    fields: Mapped[dict[str, Any]] = mapped_column(EncryptedJSON("evidence.fields"))


class IdempotencyKey(Base):
    """An ``Idempotency-Key`` a client used, the hash of its request and what it created.

    ``scope`` names the operation (``applications``, ``permits``, ``progress``);
    a key is the client's, whatever the operation, so reusing it for another
    request is refused. ``resource_id`` is what the request created (the
    application itself for ``applications``, a permit id, a stage change's event id).
    """

    __tablename__ = "idempotency_keys"

    client: Mapped[str] = mapped_column(String(100), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    application_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    scope: Mapped[str] = mapped_column(String(32), server_default="applications")
    resource_id: Mapped[str | None] = mapped_column(String(64))


class Delivery(Base):
    """Where an event stands with a delivering worker: delivered, retrying or dead."""

    __tablename__ = "deliveries"

    worker: Mapped[str] = mapped_column(String(100), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    application_id: Mapped[str] = mapped_column(String(64), index=True)
    event_type: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(1000))
    updated_at: Mapped[datetime]


class Nonce(Base):
    """A callback nonce seen within the signature window: a second use is a replay."""

    __tablename__ = "nonces"

    app_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[float] = mapped_column(Float, index=True)


class ReceivedCallback(Base):
    """A government callback, stored before it is acknowledged; its key makes a repeat a no-op."""

    __tablename__ = "callbacks"

    platform: Mapped[str] = mapped_column(String(32), primary_key=True)
    callback_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    app_id: Mapped[str] = mapped_column(String(100))
    body: Mapped[dict[str, Any]] = mapped_column(EncryptedJSON("callbacks.body"))
    received_at: Mapped[datetime]
    signed_request: Mapped[dict[str, Any] | None] = mapped_column(
        EncryptedJSON("callbacks.signed_request"),
        comment="method, target, signing headers and raw body: the callback can be verified again",
    )


class Permit(Base):
    """A 占掘路 permit application filed for an application's external works."""

    __tablename__ = "permits"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    application_id: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    request: Mapped[dict[str, Any]]
    filing_no: Mapped[str | None] = mapped_column(String(64), unique=True)
    filed_at: Mapped[datetime | None]
    permit_no: Mapped[str | None] = mapped_column(String(100))
    valid_from: Mapped[date | None]
    valid_to: Mapped[date | None]
    reason: Mapped[str | None] = mapped_column(String(1000))
    decided_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Case(Base):
    """A 一网通办 case (办件) and the one application it became."""

    __tablename__ = "cases"

    case_no: Mapped[str] = mapped_column(String(64), primary_key=True)
    item_code: Mapped[str] = mapped_column(String(64))
    application_id: Mapped[str] = mapped_column(String(64), unique=True)
    received_at: Mapped[datetime]


class StageChange(Base):
    """A stage the marketing system reported; ``seq`` orders the stages of an application."""

    __tablename__ = "stage_changes"
    __table_args__ = (
        UniqueConstraint("application_id", "seq"),
        # The sweeper's stage changes never seen by the pusher: few, whatever the history.
        Index(
            "ix_stage_changes_unpushed",
            "application_id",
            "seq",
            postgresql_where=text("push_tracked_at IS NULL"),
            sqlite_where=text("push_tracked_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    application_id: Mapped[str] = mapped_column(String(64), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    stage: Mapped[str] = mapped_column(String(32))
    handler: Mapped[str] = mapped_column(EncryptedText("stage_changes.handler"))
    occurred_at: Mapped[datetime]
    reason: Mapped[str | None] = mapped_column(String(1000))
    result_code: Mapped[str | None] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    push_tracked_at: Mapped[datetime | None] = mapped_column(
        comment="when the ywtb-status worker first recorded its push (a delivery row), or when "
        "it was recorded if its application has no 一网通办 case; NULL: the sweeper's to drive"
    )


class DeadlineAlert(Base):
    """A threshold of an application's time limit that was passed; its key makes it happen once.

    ``scope`` is ``total`` or a procedure; ``threshold`` the share of the limit
    (``1.0`` = overdue). ``event_id`` is None for a lower threshold passed
    together with a higher one (only the highest is announced).
    """

    __tablename__ = "deadline_alerts"
    __table_args__ = (UniqueConstraint("application_id", "scope", "threshold"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    application_id: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(64))
    threshold: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]


class DeadLetterReplay(Base):
    """One replay request of dead letters: who asked, when, and whether it was a dry run."""

    __tablename__ = "dead_letter_replays"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    actor: Mapped[str] = mapped_column(String(200))
    requested_at: Mapped[datetime]
    dry_run: Mapped[bool] = mapped_column(Boolean)


class DeadLetterReplayItem(Base):
    """What a replay request did with one event: sent (where), would send, held back, ..."""

    __tablename__ = "dead_letter_replay_items"
    __table_args__ = (Index("ix_dead_letter_replay_items_letter", "worker", "event_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    replay_id: Mapped[int] = mapped_column(BigInteger, index=True)
    event_id: Mapped[str] = mapped_column(String(64))
    worker: Mapped[str | None] = mapped_column(String(100))
    outcome: Mapped[str] = mapped_column(String(16))
    target_topic: Mapped[str | None] = mapped_column(String(200))
    detail: Mapped[str | None] = mapped_column(String(1000))
    at: Mapped[datetime]


class SweepItem(Base):
    """Unfinished work the sweeper drives again: ``event_id`` through ``worker``'s handler.

    A sweeper claims an item by a conditional UPDATE of its lease; ``attempts``
    and ``next_attempt_at`` (epoch seconds) are its back-off; ``status``
    ``open``, or ``dead`` after a permanent rejection (left to ops).
    """

    __tablename__ = "sweep_items"

    worker: Mapped[str] = mapped_column(String(100), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="open")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float, default=0.0)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[float] = mapped_column(Float, default=0.0)
    last_error: Mapped[str | None] = mapped_column(String(1000))
    updated_at: Mapped[datetime]


@event.listens_for(Application, "before_insert")
def _index_credential(_mapper: Mapper[Application], _conn: Connection, row: Application) -> None:
    row.credential_index = credential_index(row.credential_type, row.credential_no)


def credential_index(credential_type: str, credential_no: str) -> str:
    """The blind index lookups and uniqueness of a credential use (never the number itself)."""
    return blind_index(f"{credential_type}:{credential_no}")


class AuditRecord(Base):
    """The exchange log: one exchange, chained to the previous record by SM3 (append only)."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    time: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(200), comment="API client or platform")
    operation: Mapped[str] = mapped_column(String(300))
    subject: Mapped[str | None] = mapped_column(String(64), comment="blind index of the person")
    purpose: Mapped[str | None] = mapped_column(String(200), comment="application id or use")
    request_digest: Mapped[str | None] = mapped_column(String(64), comment="SM3 of the request")
    response_digest: Mapped[str | None] = mapped_column(String(64), comment="SM3 of the answer")
    outcome: Mapped[str] = mapped_column(String(200))
    duration_ms: Mapped[int] = mapped_column(Integer)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The head of the exchange-log chain: one row, locked by every append."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpoint(Base):
    """A signed statement (SM2) that the chain reached ``seq`` with ``hash``."""

    __tablename__ = "audit_checkpoints"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime]
    key_id: Mapped[str] = mapped_column(String(64), comment="SM3 of the public key")
    signature: Mapped[str] = mapped_column(String(300), comment="SM2-SM3 signature, DER hex")
