"""The evidence store: government records fetched once and reused while valid and fresh.

``obtain`` answers from the store when the record is fresher than
``max_age_s`` and still within its validity; otherwise it asks the platform.
No session is open while a platform is called: a pooled connection is never
held waiting on a government platform.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any, cast

from pydantic import BaseModel
from sqlalchemy import Row, Table, bindparam, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningInsert

from adapters.ports import LicenceRegistry, ProjectRegistry
from gateway.metrics import EVIDENCE_FETCHES
from gateway.settings import EvidenceSettings
from gateway.store.db import Sessions, conflict_insert
from gateway.store.models import StoredEvidence, utcnow
from schemas.applications import EvidenceKind
from schemas.dossier import EVIDENCE_KINDS, record_of
from schemas.errors import ConnectorError, NotFound

EVIDENCE = cast(Table, StoredEvidence.__table__)

#: The stored rows of a list of (kind, subject). Built once, on the table: built per call
#: through the ORM it cost half as much CPU again.
_STORED = select(EVIDENCE).where(
    tuple_(EVIDENCE.c.kind, EVIDENCE.c.subject).in_(bindparam("wanted", expanding=True))
)

#: Entries of the short-lived cache of stored records beyond which it starts afresh.
RECENT_MAX = 10_000

Record = BaseModel
"""A canonical record of one of the kinds in ``schemas.dossier.EVIDENCE_KINDS``."""

SOURCE_PLATFORMS: dict[EvidenceKind, str] = {
    kind: rule.source_platform for kind, rule in EVIDENCE_KINDS.items()
}


@dataclass(frozen=True)
class Evidence:
    """A record with its provenance."""

    kind: EvidenceKind
    subject: str
    record: Record
    fetched_at: datetime
    from_store: bool
    stored_id: int | None = None  # the store's row, when read from the store

    def columns(self) -> dict[str, Any]:
        """Provenance and fields of this record (the store's row, less kind and subject)."""
        rule = EVIDENCE_KINDS[self.kind]
        return {
            "source_platform": rule.source_platform,
            **asdict(rule.provenance(self.record)),
            "fetched_at": self.fetched_at,
            "fields": self.record.model_dump(mode="json"),
        }

    def snapshot(self) -> dict[str, Any]:
        """``columns()`` as JSON: what an application keeps of the evidence it was checked on."""
        return {
            key: value.isoformat() if isinstance(value, date | datetime) else value
            for key, value in self.columns().items()
        }


def from_row(row: Row[Any]) -> Evidence:
    kind = EvidenceKind(row.kind)
    return Evidence(kind, row.subject, record_of(kind, row.fields), row.fetched_at, True, row.id)


class EvidenceService:
    def __init__(
        self,
        licences: LicenceRegistry,
        projects: ProjectRegistry,
        sessions: Sessions,
        settings: EvidenceSettings,
    ) -> None:
        self._licences = licences
        self._projects = projects
        self._sessions = sessions
        self._settings = settings
        self._recent: dict[tuple[EvidenceKind, str], tuple[float, Evidence]] = {}

    async def stored(self, kind: EvidenceKind, subject: str) -> Evidence | None:
        """The stored record if it is fresh and still valid, else None."""
        async with self._sessions() as session:
            found = await self.stored_in(session, {kind: subject})
        return found.get(kind)

    def recent(self, wanted: dict[EvidenceKind, str]) -> dict[EvidenceKind, Evidence]:
        """The records of ``wanted`` this process read from the store in the last
        ``reuse_cache_s``, still fresh and valid: reuse decided without a round trip."""
        now = time.monotonic()
        found: dict[EvidenceKind, Evidence] = {}
        for kind, subject in wanted.items():
            cached = self._recent.get((kind, subject))
            if cached is not None and cached[0] > now and self._usable(cached[1]):
                found[kind] = cached[1]
                EVIDENCE_FETCHES.labels(kind.value, "reused").inc()
        return found

    async def stored_in(
        self, session: AsyncSession, wanted: dict[EvidenceKind, str]
    ) -> dict[EvidenceKind, Evidence]:
        """The stored records, fresh and still valid, of ``wanted`` (kind → subject), in one query.

        Reads through the caller's session, so that one short session serves a
        whole request before any platform is called.
        """
        if not wanted:
            return {}
        rows = await session.execute(
            _STORED, {"wanted": [(kind.value, subject) for kind, subject in wanted.items()]}
        )
        if len(self._recent) >= RECENT_MAX:
            self._recent.clear()
        until = time.monotonic() + self._settings.reuse_cache_s
        found: dict[EvidenceKind, Evidence] = {}
        for row in rows:
            evidence = from_row(row)
            if not self._usable(evidence):
                continue
            found[evidence.kind] = evidence
            self._recent[(evidence.kind, evidence.subject)] = (until, evidence)
            EVIDENCE_FETCHES.labels(evidence.kind.value, "reused").inc()
        return found

    def _usable(self, evidence: Evidence) -> bool:
        """Fresher than ``max_age_s`` and within its validity."""
        too_old = utcnow() - timedelta(seconds=self._settings.max_age_s)
        valid_to = EVIDENCE_KINDS[evidence.kind].provenance(evidence.record).valid_to
        return evidence.fetched_at >= too_old and (valid_to is None or valid_to >= date.today())

    async def fetch(self, kind: EvidenceKind, subject: str) -> Evidence:
        """Ask the platform; raises ``NotFound`` or a transient error."""
        record: Record
        try:
            if kind is EvidenceKind.LICENCE:
                record = await self._licences.fetch_licence(subject)
            else:
                record = await self._projects.fetch_project(subject)
        except NotFound:
            EVIDENCE_FETCHES.labels(kind.value, "not_found").inc()
            raise
        except ConnectorError:
            EVIDENCE_FETCHES.labels(kind.value, "failed").inc()
            raise
        EVIDENCE_FETCHES.labels(kind.value, "fetched").inc()
        return Evidence(kind, subject, record, utcnow(), from_store=False)

    async def obtain(self, kind: EvidenceKind, subject: str) -> Evidence:
        """From the store when fresh and valid, else from the platform."""
        return await self.stored(kind, subject) or await self.fetch(kind, subject)

    async def obtain_and_keep(self, kind: EvidenceKind, subject: str) -> Evidence:
        """``obtain``, keeping a newly fetched record in the store.

        Sessions one after another, none open while the platform is called.
        """
        evidence = await self.obtain(kind, subject)
        if not evidence.from_store:
            async with self._sessions() as session, session.begin():
                await keep(session, evidence)
        return evidence


async def keep(session: AsyncSession, *evidence: Evidence) -> dict[EvidenceKind, int]:
    """Insert or refresh the store's rows for these records (one of each kind), in one
    statement; return each one's row id by kind.

    A record read from the store is not written again: every application on
    the same firm would otherwise queue on that one row's lock.
    """
    ids = {e.kind: e.stored_id for e in evidence if e.stored_id is not None}
    rows = [
        {"kind": e.kind.value, "subject": e.subject, **e.columns()}
        for e in evidence
        if e.stored_id is None
    ]
    if rows:
        upsert = _upsert(session.get_bind().dialect.name, tuple(rows[0]))
        written = await session.execute(upsert, rows)
        ids |= {EvidenceKind(kind): int(row_id) for row_id, kind in written}
    return ids


@functools.cache
def _upsert(dialect: str, columns: tuple[str, ...]) -> ReturningInsert[int, str]:
    """INSERT of rows of ``columns`` that refreshes the stored row of the same kind and
    subject, returning each row's id and kind. Built once per dialect (building it, its
    ``excluded`` above all, was a visible cost of every submit) and run with the rows as
    parameters: SQLAlchemy sends them as one multi-row statement."""
    insert = conflict_insert(dialect)
    # On the table, not the entity: the ORM's bulk-insert path costs more than the round trip.
    statement = insert(EVIDENCE)
    key = ("kind", "subject")
    upsert = statement.on_conflict_do_update(
        index_elements=list(key),
        set_={name: statement.excluded[name] for name in columns if name not in key},
    )
    return upsert.returning(EVIDENCE.c.id, EVIDENCE.c.kind)
