"""The round trips of warm 一证办电 and of a read, counted so that they cannot grow silently.

Warm: the licence is already on file (a first submit fetched it), so a submit
needs no platform, only the store. Everything the engine does is counted
through SQLAlchemy's events and named: statements, connections checked out of
the pool (each one a ping while ``pool_pre_ping`` is on), commits, and resets
(the rollback of a connection returned to the pool).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.access import Client
from gateway.bootstrap import Container
from schemas.applications import ApplicationRequest, ApplicationStatus
from tests.integration.conftest import Platform
from tests.unit.test_application_service import settled

#: bench/run.py's WARM_BODY: 0.4 kV, 100 kVA, a firm, no project: the licence alone.
WARM = ApplicationRequest.model_validate(
    {
        "applicant": {"credential_type": "uscc", "credential_no": "91310106MA1FP5221E"},
        "site": {"address": "上海市静安区南京西路1266号", "district_code": "310106"},
        "request": {
            "business_type": "new_connection",
            "voltage_level": "0.4kV",
            "capacity_kva": 100,
        },
    }
)


@dataclass
class Trips:
    """What the store was asked while counting."""

    statements: list[str] = field(default_factory=list)
    checkouts: int = 0  # connections taken from the pool: one ping each with pool_pre_ping
    commits: int = 0
    resets: int = 0  # connections returned to the pool: one rollback each


@contextmanager
def counting(engine: AsyncEngine) -> Iterator[Trips]:
    trips = Trips()

    def statement(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        trips.statements.append(" ".join(sql.split())[:120])

    def checkout(*_args: Any) -> None:
        trips.checkouts += 1

    def commit(*_args: Any) -> None:
        trips.commits += 1

    def reset(*_args: Any) -> None:
        trips.resets += 1

    listeners = [
        (engine.sync_engine, "before_cursor_execute", statement),
        (engine.sync_engine, "commit", commit),
        (engine.sync_engine.pool, "checkout", checkout),
        (engine.sync_engine.pool, "reset", reset),
    ]
    for target, name, listener in listeners:
        event.listen(target, name, listener)
    try:
        yield trips
    finally:
        for target, name, listener in listeners:
            event.remove(target, name, listener)


async def test_a_warm_submit_and_a_read_stay_within_their_round_trips(
    connector: Container, platforms: dict[str, Platform]
) -> None:
    applications = connector.applications
    first = await applications.submit(WARM, client="sandbox", idempotency_key="first")
    assert first.created and first.application.status is ApplicationStatus.READY
    # The first submit's licence call is written to the exchange log by its own writer
    # a few ms later: done before counting, so only the submits' trips are counted.
    await connector.exchanges.flush()

    # The licence is on file: one short read (the key and the stored licence), then one
    # transaction of batched inserts, and the answer is what it wrote (no read-back).
    with counting(connector.engine) as trips:
        warm = await applications.submit(WARM, client="sandbox", idempotency_key="warm")
    assert warm.created and warm.application.status is ApplicationStatus.READY
    [licence] = warm.application.evidence
    assert licence.status.value == "fetched" and licence.fields["name"]
    assert len(trips.statements) <= 6, trips.statements
    assert (trips.checkouts, trips.commits, trips.resets) == (2, 1, 2)

    # Read moments ago, the licence is reused without a query: one transaction in all.
    with counting(connector.engine) as trips:
        steady = await applications.submit(WARM, client="sandbox", idempotency_key="steady")
    assert steady.created and steady.application.evidence == warm.application.evidence
    assert len(trips.statements) <= 5, trips.statements
    assert (trips.checkouts, trips.commits, trips.resets) == (1, 1, 1)

    with counting(connector.engine) as trips:
        again = await applications.submit(WARM, client="sandbox", idempotency_key="steady")
    assert not again.created and settled(again.application) == settled(steady.application)
    assert len(trips.statements) <= 5, trips.statements

    reader = Client("sandbox", frozenset({"applications:read"}), rate_per_s=100)
    with counting(connector.engine) as trips:
        read = await applications.get(steady.application.id, reader)
    assert settled(read) == settled(steady.application)
    assert len(trips.statements) <= 4, trips.statements
    assert (trips.checkouts, trips.commits, trips.resets) == (1, 0, 1)
