"""The exchange log (X-Road's message log, made better): who exchanged what about whom.

Every call to a government platform (``AuditTransport`` on the shared httpx
client), every inbound callback, refused ones included (``CallbackVerifier``),
and every read of personal data through the API is one ``audit_log`` record:
time, actor (API client or platform), operation, subject (blind index of the
person), purpose (application id or stated use), SM3 digests of request and
answer, outcome and duration. Records are chained::

    hash(n) = SM3(canonical(record n) ‖ hash(n-1))      hash(0) = 64 × "0"

so changing, deleting or reordering one record breaks the chain at its
``seq``; checkpoints sign ``(seq, hash)`` with the connector's SM2 audit key.

Appends are serialised by the chain head row (``audit_head``), locked first
in the appending transaction, so two processes never fork the chain. Callers
never wait on the store: records go through a bounded in-process queue that
one writer loop (``supervise``) drains in batches, waiting ``audit_batch_wait_s``
after a record for the ones that follow it (one transaction for the calls of a
request); a full queue makes the caller wait rather than drop a record; a
failed batch is retried, never lost; a stop writes what is queued. A hard crash
loses what is still in memory: the last few milliseconds of exchanges.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import httpx
from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.signing import ALGORITHMS
from gateway.protect import blind_index, sm3_hex
from gateway.settings import ProtectionSettings
from gateway.store.db import Sessions, store_errors, transaction
from gateway.store.models import AuditCheckpoint, AuditHead, AuditRecord, utcnow
from gateway.supervise import Beat, Loops, supervise
from schemas.errors import StoreUnavailable

log = logging.getLogger(__name__)

#: Longest pause between two tries of the writer while the store is away.
_MAX_BACKOFF_S = 5.0

GENESIS = "0" * 64
#: The tables as Core sees them: appends skip the ORM's unit of work.
AUDIT_HEAD = cast(Table, AuditHead.__table__)
AUDIT_LOG = cast(Table, AuditRecord.__table__)
HEAD_ID = 1
EXPORT_FORMAT = "ywtb-audit-export/1"
_SM2 = ALGORITHMS["sm2-sm3"]


@dataclass(frozen=True)
class Exchange:
    """One exchange, before it has its place in the chain."""

    actor: str
    operation: str
    outcome: str
    duration_ms: int = 0
    subject: str | None = None
    purpose: str | None = None
    request_digest: str | None = None
    response_digest: str | None = None
    time: datetime = field(default_factory=utcnow)


def digest(data: bytes | str | None) -> str | None:
    """SM3 of a request or answer (None when there was none)."""
    if data is None:
        return None
    return sm3_hex(data.encode("utf-8") if isinstance(data, str) else data)


def person(credential_type: str, credential_no: str) -> str:
    """The subject of an exchange about a person: the blind index of the credential."""
    return blind_index(f"{credential_type}:{credential_no}")


# --- the chain ------------------------------------------------------------------------------


RECORD_FIELDS = (
    "seq",
    "time",
    "actor",
    "operation",
    "subject",
    "purpose",
    "request_digest",
    "response_digest",
    "outcome",
    "duration_ms",
)


def canonical(record: dict[str, Any]) -> bytes:
    """The bytes a record's hash covers: its fields in a fixed order, as compact JSON."""
    values = [record[name] for name in RECORD_FIELDS]
    return json.dumps(values, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def chain_hash(record: dict[str, Any], prev_hash: str) -> str:
    return sm3_hex(canonical(record) + prev_hash.encode("ascii"))


def as_dict(row: AuditRecord) -> dict[str, Any]:
    """A stored record as plain JSON values (time in ISO 8601, UTC)."""
    return {
        "seq": row.seq,
        "time": row.time.astimezone(UTC).isoformat(),
        "actor": row.actor,
        "operation": row.operation,
        "subject": row.subject,
        "purpose": row.purpose,
        "request_digest": row.request_digest,
        "response_digest": row.response_digest,
        "outcome": row.outcome,
        "duration_ms": row.duration_ms,
        "prev_hash": row.prev_hash,
        "hash": row.hash,
    }


def checkpoint_message(seq: int, hash_: str) -> bytes:
    return f"ywtb-audit-checkpoint:{seq}:{hash_}".encode("ascii")


def sign_checkpoint(private_key: str, seq: int, hash_: str) -> str:
    return _SM2.sign(private_key, checkpoint_message(seq, hash_))


def key_id(public_key: str) -> str:
    return sm3_hex(bytes.fromhex(public_key.strip()))[:16]


@dataclass(frozen=True)
class Problem:
    """Where the chain is broken: the first ``seq`` that does not hold, and why."""

    seq: int
    reason: str

    def __str__(self) -> str:
        return f"audit_log seq {self.seq}: {self.reason}"


class ChainWalk:
    """Walks records in ``seq`` order and names the first that breaks the chain."""

    def __init__(self, start_seq: int = 1, prev_hash: str = GENESIS) -> None:
        self.expected_seq = start_seq
        self.prev_hash = prev_hash
        self.hashes: dict[int, str] = {}

    def step(self, record: dict[str, Any]) -> Problem | None:
        seq = int(record["seq"])
        if seq > self.expected_seq:
            return Problem(self.expected_seq, "missing (deleted)")
        if seq < self.expected_seq:
            return Problem(seq, "out of order (duplicated or reordered)")
        if record["prev_hash"] != self.prev_hash:
            return Problem(seq, "does not follow the record before it (modified or reordered)")
        if chain_hash(record, self.prev_hash) != record["hash"]:
            return Problem(seq, "modified (its hash does not match its content)")
        self.hashes[seq] = record["hash"]
        self.prev_hash = record["hash"]
        self.expected_seq = seq + 1
        return None


def check_checkpoint(
    checkpoint: dict[str, Any], public_key: str, walk: ChainWalk
) -> Problem | None:
    seq = int(checkpoint["seq"])
    message = checkpoint_message(seq, checkpoint["hash"])
    try:
        valid = _SM2.verify(public_key, message, checkpoint["signature"])
    except ValueError:
        valid = False
    if not valid:
        return Problem(seq, "checkpoint signature does not verify")
    if seq in walk.hashes and walk.hashes[seq] != checkpoint["hash"]:
        return Problem(seq, "differs from its signed checkpoint (chain rewritten)")
    if seq >= walk.expected_seq:
        return Problem(walk.expected_seq, "missing (a signed checkpoint covers it)")
    return None


async def append(
    session: AsyncSession, exchanges: Iterable[Exchange], signer: Signer | None = None
) -> int:
    """Append ``exchanges`` to the chain inside the caller's transaction; return the new head.

    The first statement locks the head row and reads it (PostgreSQL: row lock;
    SQLite: the write lock), so concurrent appenders queue up instead of forking
    the chain. Core statements, four round trips a batch with the commit: the
    writer shares the event loop with the requests whose exchanges it records.
    """
    head = (
        await session.execute(
            update(AUDIT_HEAD)
            .where(AUDIT_HEAD.c.id == HEAD_ID)
            .values(id=HEAD_ID)
            .returning(AUDIT_HEAD.c.seq, AUDIT_HEAD.c.hash)
        )
    ).one_or_none()
    if head is None:
        raise RuntimeError("audit_head row missing: the store was not migrated")
    seq, prev = int(head.seq), str(head.hash)
    rows: list[dict[str, Any]] = []
    for exchange in exchanges:
        seq += 1
        when = exchange.time.astimezone(UTC)
        values: dict[str, Any] = {
            "seq": seq,
            "time": when,
            "actor": exchange.actor[:200],
            "operation": exchange.operation[:300],
            "subject": exchange.subject,
            "purpose": exchange.purpose[:200] if exchange.purpose else None,
            "request_digest": exchange.request_digest,
            "response_digest": exchange.response_digest,
            "outcome": exchange.outcome[:200],
            "duration_ms": int(exchange.duration_ms),
        }
        hashed = chain_hash(values | {"time": when.isoformat()}, prev)
        rows.append(values | {"prev_hash": prev, "hash": hashed})
        prev = hashed
    if rows:
        await session.execute(insert(AUDIT_LOG), rows)
        await session.execute(
            update(AUDIT_HEAD).where(AUDIT_HEAD.c.id == HEAD_ID).values(seq=seq, hash=prev)
        )
    if signer is not None:
        await signer.maybe_checkpoint(session, seq, prev)
    return seq


@dataclass
class Signer:
    """Signs checkpoints with the connector's SM2 audit key."""

    private_key: str
    public_key: str
    every: int = 100
    interval_s: float = 60.0
    last_time: float = field(default_factory=time.monotonic)
    #: The highest checkpoint this process has seen; the store's is never lower.
    last_seq: int = 0

    @classmethod
    def of(cls, settings: ProtectionSettings) -> Signer:
        return cls(
            settings.audit_private_key.get_secret_value(),
            settings.audit_public_key,
            settings.audit_checkpoint_every,
            settings.audit_checkpoint_interval_s,
        )

    def _due(self, seq: int, last: int) -> bool:
        return seq - last >= self.every or time.monotonic() - self.last_time >= self.interval_s

    async def maybe_checkpoint(self, session: AsyncSession, seq: int, hash_: str) -> None:
        if not self._due(seq, self.last_seq):
            return  # not due after the last checkpoint seen, so not after the store's either
        last = await session.scalar(select(func.max(AuditCheckpoint.seq))) or 0
        self.last_seq = max(self.last_seq, last)
        if seq > last and self._due(seq, last):
            await self.checkpoint(session, seq, hash_)

    async def checkpoint(self, session: AsyncSession, seq: int, hash_: str) -> None:
        session.add(
            AuditCheckpoint(
                seq=seq,
                hash=hash_,
                signed_at=utcnow(),
                key_id=key_id(self.public_key),
                signature=sign_checkpoint(self.private_key, seq, hash_),
            )
        )
        self.last_time = time.monotonic()
        self.last_seq = max(self.last_seq, seq)


async def checkpoint_head(sessions: Sessions, signer: Signer) -> int:
    """Sign the current head (if not signed yet); return its seq."""
    async with transaction(sessions) as session:
        await session.execute(update(AuditHead).where(AuditHead.id == HEAD_ID).values(id=HEAD_ID))
        head = await session.get(AuditHead, HEAD_ID, populate_existing=True)
        assert head is not None
        if head.seq and await session.get(AuditCheckpoint, head.seq) is None:
            await signer.checkpoint(session, head.seq, head.hash)
        return head.seq


# --- the writer -----------------------------------------------------------------------------


class AuditLog:
    """The process's way into the exchange log: ``await record(exchange)`` never fails."""

    def __init__(self, sessions: Sessions, settings: ProtectionSettings, loops: Loops) -> None:
        self._sessions = sessions
        self._signer = Signer.of(settings)
        self._loops = loops
        self._queue: asyncio.Queue[Exchange] = asyncio.Queue(settings.audit_queue_size)
        self._batch_wait_s = settings.audit_batch_wait_s
        self._batch: list[Exchange] = []  # taken from the queue, not yet committed
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._unsigned = False  # records appended since the last checkpoint this process made

    def backlog(self) -> int:
        """Records waiting to be written (shown on ``/readyz``)."""
        return self._queue.qsize() + len(self._batch)

    def readiness(self) -> dict[str, Any]:
        """The ``exchange_log`` check of ``/readyz``: not ok while callers wait on a full queue."""
        return {"ok": not self._queue.full(), "backlog": self.backlog()}

    async def record(self, exchange: Exchange) -> None:
        """Queue ``exchange`` for the chain; waits (never drops) when the queue is full."""
        if self._closed:  # shutting down: a late exchange is written at once
            try:
                async with transaction(self._sessions) as session:
                    await append(session, [exchange], self._signer)
            except SQLAlchemyError:
                log.exception("exchange not recorded at shutdown", extra={"op": exchange.operation})
            return
        self._start()
        try:
            self._queue.put_nowait(exchange)
        except asyncio.QueueFull:
            log.warning("exchange log queue full: caller waits", extra={"backlog": self.backlog()})
            await self._queue.put(exchange)

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._stop.clear()
            self._task = asyncio.create_task(
                supervise("audit-writer", self._drain, self._stop, self._loops)
            )

    async def _drain(self, stop: asyncio.Event, beat: Beat) -> None:
        """Write batches until stopped with nothing left. While the store is away the batch
        in hand is kept and tried again with back-off (logged when the outage starts and
        ends): the store's outage is ``/readyz``'s to report, not a failure of this loop."""
        backoff: float | None = None
        while True:
            try:
                with store_errors():
                    if await self._write_next(stop, beat):
                        return
            except StoreUnavailable as exc:
                if backoff is None:
                    backoff = 0.1
                    log.warning(
                        "exchange log waiting for the store",
                        extra={"error": exc.detail, "backlog": self.backlog()},
                    )
                beat()
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, _MAX_BACKOFF_S)
                continue
            if backoff is not None:
                log.info("exchange log written again", extra={"backlog": self.backlog()})
                backoff = None

    async def _write_next(self, stop: asyncio.Event, beat: Beat) -> bool:
        """Write the next batch (or sign the tail when idle); True once stopped and drained."""
        if not self._batch:
            if stop.is_set() and self._queue.empty():
                await self._sign_tail(force=True)
                return True
            try:
                first = await asyncio.wait_for(self._queue.get(), 0.2)
            except TimeoutError:
                await self._sign_tail(force=False)
                beat()
                return False
            self._batch.append(first)
            await self._fill_batch()
        async with transaction(self._sessions) as session:
            await append(session, self._batch, self._signer)
        self._batch = []
        self._unsigned = True
        beat()
        return False

    async def _fill_batch(self) -> None:
        """Add what comes within ``batch_wait_s`` (at most 500 records): one transaction, not
        one per record. Records taken stay in ``_batch`` until committed, so a restarted
        writer writes them."""
        until = time.monotonic() + self._batch_wait_s
        while len(self._batch) < 500:
            if self._queue.empty():
                left = until - time.monotonic()
                if left <= 0:
                    return
                try:
                    self._batch.append(await asyncio.wait_for(self._queue.get(), left))
                except TimeoutError:
                    return
            else:
                self._batch.append(self._queue.get_nowait())

    async def _sign_tail(self, *, force: bool) -> None:
        """Sign the head once records have waited ``interval_s`` (or at shutdown)."""
        waited = time.monotonic() - self._signer.last_time
        if self._unsigned and (force or waited >= self._signer.interval_s):
            await checkpoint_head(self._sessions, self._signer)
            self._unsigned = False

    async def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until everything recorded so far is in the store."""
        async with asyncio.timeout(timeout_s):
            while self.backlog():
                await asyncio.sleep(0.02)

    async def aclose(self) -> None:
        """Write what is queued, then stop the writer."""
        self._closed = True
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 30)
            except TimeoutError:
                log.error("exchange log not drained", extra={"backlog": self.backlog()})
                self._task.cancel()


# --- outbound calls ------------------------------------------------------------------------


class _DigestingStream(httpx.AsyncByteStream):
    """The answer's body as it streams through, digested; recorded when it is closed."""

    def __init__(
        self, inner: httpx.AsyncByteStream, done: Callable[[str], Awaitable[None]]
    ) -> None:
        from cryptography.hazmat.primitives import hashes

        self._inner = inner
        self._hash = hashes.Hash(hashes.SM3())
        self._done = done

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._hash.update(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()
        await self._done(self._hash.finalize().hex())


class AuditTransport(httpx.AsyncBaseTransport):
    """Records every call through the shared httpx client (REST and zeep's SOAP alike)."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        audit: AuditLog,
        platforms: dict[str, str],
    ) -> None:
        self._inner = inner
        self._audit = audit
        self._platforms = platforms  # "host:port" → platform name

    def _actor(self, url: httpx.URL) -> str:
        netloc = url.netloc.decode("ascii", "replace")
        return self._platforms.get(netloc, netloc)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        started = time.perf_counter()
        try:
            body: bytes | None = request.content
        except httpx.RequestNotRead:
            body = None
        actor, operation = self._actor(request.url), f"{request.method} {request.url.path}"

        def exchange(outcome: str, answer: str | None) -> Exchange:
            return Exchange(
                actor=actor,
                operation=operation,
                outcome=outcome,
                duration_ms=round((time.perf_counter() - started) * 1000),
                purpose="platform call",
                request_digest=digest(body),
                response_digest=answer,
            )

        try:
            response = await self._inner.handle_async_request(request)
        except Exception as exc:
            await self._audit.record(exchange(f"failed: {type(exc).__name__}", None))
            raise

        async def done(answer: str) -> None:
            await self._audit.record(exchange(f"http {response.status_code}", answer))

        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _DigestingStream(response.stream, done)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


# --- verification and export ---------------------------------------------------------------


async def verify_store(sessions: Sessions, public_key: str) -> tuple[int, Problem | None]:
    """Walk the whole chain and every checkpoint; (records checked, first problem or None)."""
    walk = ChainWalk()
    checked = 0
    async with sessions() as session:
        after = 0
        while True:
            rows = (
                await session.scalars(
                    select(AuditRecord)
                    .where(AuditRecord.seq > after)
                    .order_by(AuditRecord.seq)
                    .limit(1000)
                )
            ).all()
            if not rows:
                break
            for row in rows:
                problem = walk.step(as_dict(row))
                if problem is not None:
                    return checked, problem
                checked += 1
            after = rows[-1].seq
        head = await session.get(AuditHead, HEAD_ID)
        if head is not None and head.seq >= walk.expected_seq:
            return checked, Problem(walk.expected_seq, "missing (the chain head is further on)")
        if head is not None and head.seq and head.hash != walk.prev_hash:
            return checked, Problem(head.seq, "differs from the chain head")
        checkpoints = (
            await session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.seq))
        ).all()
    for checkpoint in checkpoints:
        problem = check_checkpoint(
            {"seq": checkpoint.seq, "hash": checkpoint.hash, "signature": checkpoint.signature},
            public_key,
            walk,
        )
        if problem is not None:
            return checked, problem
    return checked, None


async def export(
    sessions: Sessions,
    signer: Signer,
    since: datetime | None,
    until: datetime | None,
) -> list[dict[str, Any]]:
    """The lines of an export: header, the records in [since, until], their checkpoints.

    The range runs on to the next signed checkpoint (the head is signed first),
    so every exported record is covered by a signature.
    """
    await checkpoint_head(sessions, signer)
    async with sessions() as session:
        query = select(AuditRecord).order_by(AuditRecord.seq)
        if since is not None:
            query = query.where(AuditRecord.time >= since)
        first = await session.scalar(query.limit(1))
        if first is None:
            records: list[AuditRecord] = []
            checkpoints: list[AuditCheckpoint] = []
        else:
            last_seq = first.seq
            if until is not None:
                last_seq = (
                    await session.scalar(
                        select(func.max(AuditRecord.seq)).where(AuditRecord.time <= until)
                    )
                    or first.seq
                )
            cover = await session.scalar(
                select(func.min(AuditCheckpoint.seq)).where(AuditCheckpoint.seq >= last_seq)
            )
            end = cover if cover is not None else last_seq
            records = list(
                (
                    await session.scalars(
                        select(AuditRecord)
                        .where(AuditRecord.seq >= first.seq, AuditRecord.seq <= end)
                        .order_by(AuditRecord.seq)
                    )
                ).all()
            )
            checkpoints = list(
                (
                    await session.scalars(
                        select(AuditCheckpoint)
                        .where(AuditCheckpoint.seq >= first.seq, AuditCheckpoint.seq <= end)
                        .order_by(AuditCheckpoint.seq)
                    )
                ).all()
            )
    lines: list[dict[str, Any]] = [
        {
            "type": "header",
            "format": EXPORT_FORMAT,
            "hash": "SM3(canonical(record) ‖ prev_hash); canonical = JSON array of "
            + ", ".join(RECORD_FIELDS),
            "signature": "SM2-SM3 (GB/T 32918, default signer id) over "
            "'ywtb-audit-checkpoint:<seq>:<hash>', DER hex",
            "public_key": signer.public_key,
            "key_id": key_id(signer.public_key),
            "exported_at": utcnow().isoformat(),
        }
    ]
    lines += [{"type": "record", **as_dict(row)} for row in records]
    lines += [
        {
            "type": "checkpoint",
            "seq": c.seq,
            "hash": c.hash,
            "signed_at": c.signed_at.isoformat(),
            "key_id": c.key_id,
            "signature": c.signature,
        }
        for c in checkpoints
    ]
    return lines


def verify_export(lines: list[dict[str, Any]], public_key: str | None = None) -> Problem | None:
    """Verify an export offline: the chain of its records and the signatures over it.

    ``public_key`` is the key the auditor trusts (default: the one in the file).
    """
    header = next((line for line in lines if line.get("type") == "header"), None)
    if header is None or header.get("format") != EXPORT_FORMAT:
        return Problem(0, f"not a {EXPORT_FORMAT} file")
    key = public_key or header["public_key"]
    records = [line for line in lines if line.get("type") == "record"]
    checkpoints = [line for line in lines if line.get("type") == "checkpoint"]
    if not records:
        return None
    walk = ChainWalk(int(records[0]["seq"]), records[0]["prev_hash"])
    for record in records:
        problem = walk.step(record)
        if problem is not None:
            return problem
    for checkpoint in checkpoints:
        problem = check_checkpoint(checkpoint, key, walk)
        if problem is not None:
            return problem
    last = int(records[-1]["seq"])
    if not any(int(c["seq"]) == last for c in checkpoints):
        return Problem(last, "the last record is not covered by a signed checkpoint")
    return None


async def record_read(
    exchanges: AuditLog,
    client: str,
    operation: str,
    purpose: str,
    answer: bytes | str,
    subject: str | None = None,
) -> None:
    """A read of personal data through the API: who read what about whom, and for what."""
    await exchanges.record(
        Exchange(
            actor=f"client:{client}",
            operation=operation,
            outcome="read",
            subject=subject,
            purpose=purpose,
            response_digest=digest(answer),
        )
    )
