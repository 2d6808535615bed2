"""Event types and topics (public contract).

Events are CloudEvents 1.0, typed ``cn.sgcc.sh.ywtb.<aggregate>.<verb>``, keyed
by the aggregate id, on topics ``ywtb.<stream>`` with ``.retry`` and ``.dlq``
companions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

EVENT_TYPE_PREFIX = "cn.sgcc.sh.ywtb"
SOURCE = "/ywtb-connector"

APPLICATION_EVENTS = "ywtb.application.events"
PERMIT_EVENTS = "ywtb.permit.events"
CASE_EVENTS = "ywtb.case.events"

#: Every topic the connector writes; created on start. All are keyed by application id.
TOPICS: tuple[str, ...] = (APPLICATION_EVENTS, PERMIT_EVENTS, CASE_EVENTS)


def event_type(aggregate: str, verb: str) -> str:
    return f"{EVENT_TYPE_PREFIX}.{aggregate}.{verb}"


def retry_topic(topic: str) -> str:
    return f"{topic}.retry"


def dead_letter_topic(topic: str) -> str:
    return f"{topic}.dlq"


def all_topics() -> list[str]:
    """The topics with their retry and dead-letter companions."""
    return [t for base in TOPICS for t in (base, retry_topic(base), dead_letter_topic(base))]


class ApplicationEvent:
    """Types of ``ywtb.application.events``."""

    RECEIVED = event_type("application", "received")
    EVIDENCE_FETCHED = event_type("application", "evidence_fetched")
    DOSSIER_COMPLETED = event_type("application", "dossier_completed")
    REJECTED = event_type("application", "rejected")
    STAGE_CHANGED = event_type("application", "stage_changed")


class PermitEvent:
    """Types of ``ywtb.permit.events`` (占掘路)."""

    REQUESTED = event_type("permit", "requested")
    FILED = event_type("permit", "filed")
    DECIDED = event_type("permit", "decided")


class CaseEvent:
    """Types of ``ywtb.case.events`` (一网通办 办件)."""

    RECEIVED = event_type("case", "received")


@dataclass(frozen=True)
class Event:
    """An event to publish: written to the outbox in the transaction of its state change."""

    topic: str
    type: str
    key: str
    data: dict[str, Any]
    subject: str | None = None
    source: str = SOURCE
    id: str = field(default_factory=lambda: str(uuid4()))
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
