"""The figures ops watch, gathered from the store and Kafka: one place for every view of them.

``/metrics``, ``ywtb ops status`` and the ``/ops`` console show the same
figures. Those that cost a query or a Kafka round trip (outbox backlog,
applications per status, consumer lag in messages and seconds, dead letters
per worker) are gathered by ``OpsFigures.refresh``, run as a periodic job, and
cached, so a scrape never touches the store or the broker; the counts are
bounded (``count_cap`` rows per status) and dead letters are counted
incrementally. What lives in the process (breakers, loops, counters) is read
live by ``gateway.metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from sqlalchemy import func, select

from gateway.lag import DeadLetterTally, worker_lag
from gateway.outbox import backlog
from gateway.settings import KafkaSettings, Settings
from gateway.store.db import Sessions, store_errors
from gateway.store.models import Application
from gateway.supervise import Beat, Loops, periodic, supervise
from schemas.applications import ApplicationStatus
from schemas.errors import ConnectorError

log = logging.getLogger(__name__)

#: The name of the periodic job in ``Container.loops``.
LOOP_NAME = "ops-figures"


@dataclass(frozen=True)
class LagRow:
    """Lag of one consumer group on one partition; ``age_s``: age of the oldest unconsumed
    message (0 when none waits, None when the broker did not say in time)."""

    worker: str
    group: str
    topic: str
    partition: int
    committed: int
    end: int | None
    lag: int | None
    age_s: float | None


@dataclass(frozen=True)
class Figures:
    """One gathering; a part that could not be read is named in ``problems`` with the cause."""

    gathered_at: float
    took_s: float
    outbox_pending: int | None = None
    outbox_oldest_age_s: float | None = None
    applications: dict[str, int] = field(default_factory=dict)
    lag: list[LagRow] = field(default_factory=list)
    dead_letters: dict[tuple[str, str], int] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)

    def up(self, part: str) -> bool:
        return part not in self.problems


#: The parts of a gathering, as ``Figures.problems`` and ``ywtb_figures_up`` name them.
PARTS = ("store", "lag", "dead_letters")


async def count_applications(sessions: Sessions, cap: int) -> dict[str, int]:
    """Applications per status, each count stopping at ``cap`` (an index range per status)."""
    counts: dict[str, int] = {}
    with store_errors():
        async with sessions() as session:
            for status in ApplicationStatus:
                capped = (
                    select(Application.id)
                    .where(Application.status == status.value)
                    .limit(cap)
                    .subquery()
                )
                counts[status.value] = int(
                    await session.scalar(select(func.count()).select_from(capped)) or 0
                )
    return counts


async def outbox_backlog(sessions: Sessions) -> tuple[int, float | None]:
    with store_errors():
        async with sessions() as session:
            return await backlog(session)


class OpsFigures:
    """The latest figures of one deployment, refreshed by a periodic job (``run``)."""

    def __init__(
        self,
        sessions: Sessions,
        kafka: KafkaSettings,
        workers: dict[str, tuple[str, ...]],
        *,
        count_cap: int = 100_000,
    ) -> None:
        self._sessions = sessions
        self._kafka = kafka
        self._workers = workers
        self._count_cap = count_cap
        self._dead_letters = DeadLetterTally(kafka) if kafka.bootstrap else None
        self.latest: Figures | None = None

    async def refresh(self) -> Figures:
        """Gather every figure now; keep and return them."""
        started, clock = time.time(), time.perf_counter()
        problems: dict[str, str] = {}
        pending, oldest_age = None, None
        applications: dict[str, int] = {}
        lag: list[LagRow] = []
        dead_letters: dict[tuple[str, str], int] = {}
        try:
            pending, oldest_age = await outbox_backlog(self._sessions)
            applications = await count_applications(self._sessions, self._count_cap)
        except ConnectorError as exc:
            problems["store"] = exc.detail
        if self._dead_letters is None:
            problems["lag"] = problems["dead_letters"] = "YWTB_KAFKA_BOOTSTRAP is not set"
        else:
            try:
                lag = [LagRow(**row) for row in await worker_lag(self._kafka, self._workers)]
            except ConnectorError as exc:
                problems["lag"] = exc.detail
            try:
                dead_letters = await self._dead_letters.refresh()
            except ConnectorError as exc:
                problems["dead_letters"] = exc.detail
        if problems:
            log.warning("ops figures incomplete", extra={"problems": problems})
        self.latest = Figures(
            gathered_at=started,
            took_s=round(time.perf_counter() - clock, 3),
            outbox_pending=pending,
            outbox_oldest_age_s=oldest_age,
            applications=applications,
            lag=lag,
            dead_letters=dead_letters,
            problems=problems,
        )
        return self.latest

    async def run(self, stop: asyncio.Event, loops: Loops, interval_s: float) -> None:
        """Refresh every ``interval_s`` until ``stop``, supervised as ``ops-figures``."""

        async def body(stop: asyncio.Event, beat: Beat) -> None:
            await periodic(stop, beat, interval_s, self.refresh)

        await supervise(LOOP_NAME, body, stop, loops)


def figures_for(sessions: Sessions, settings: Settings) -> OpsFigures:
    """The ``OpsFigures`` of a deployment: its store, its Kafka and every named worker."""
    from gateway.workers import WORKER_TOPICS  # here: gateway.workers imports the whole app

    return OpsFigures(sessions, settings.kafka, WORKER_TOPICS, count_cap=settings.metrics.count_cap)
