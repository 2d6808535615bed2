"""No hot query scans a table: the plans PostgreSQL chooses for the queries the code runs.

The store is filled with a few thousand rows per table and analysed; then the
real code runs (the relay's batch, the sweeper's open work, a round of the
deadline job, a submit with a key, a read, the list by case number and by
credential) while every statement it sends is recorded, and each one is
explained with its own parameters. A sequential scan of a table holding at
least ``BIG`` rows fails the test. PostgreSQL only: SQLite's planner is not
the one that serves production.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.access import Client
from gateway.bootstrap import Container
from gateway.outbox import key_hash
from gateway.relay import Relay
from gateway.store.models import (
    Application,
    ApplicationEvidence,
    Case,
    DeadlineAlert,
    Delivery,
    IdempotencyKey,
    OutboxRow,
    Permit,
    StageChange,
    StoredEvidence,
    credential_index,
    utcnow,
)
from gateway.sweeper import Sweeper
from schemas.applications import ApplicationFilter
from schemas.dossier import procedures, time_limit_days
from schemas.events import APPLICATION_EVENTS, PERMIT_EVENTS, ApplicationEvent, PermitEvent
from tests.integration.conftest import Platform
from tests.integration.test_statement_budget import WARM
from tests.unit.test_application_service import settled

pytestmark = pytest.mark.parametrize("store_settings", ["postgresql"], indirect=True)

N = 3000  # applications in the store
BIG = 1000  # a table with this many rows must be read through an index
OWNERS = 20


def credential(i: int) -> str:
    return f"91310000{i:010d}"


def rows(now: Any) -> dict[type[Any], list[dict[str, Any]]]:
    """A store in steady state: most applications closed, events sent, pushes delivered."""
    request = WARM.model_dump(mode="json")
    apps, links, evidence, outbox, keys, cases, stages, deliveries, permits, alerts = (
        [] for _ in range(10)
    )
    for i in range(N):
        app_id = f"app-{i:06d}"
        at = now - timedelta(minutes=i)
        pending = i % 100 == 0
        apps.append(
            {
                "id": app_id,
                "status": "evidence_pending" if pending else "ready",
                "credential_type": "uscc",
                "credential_no": credential(i),
                "credential_index": credential_index("uscc", credential(i)),
                "request": request,
                "procedures": [p.value for p in procedures(WARM)],
                "time_limit_days": time_limit_days(WARM),
                "reasons": [],
                "owner": f"client-{i % OWNERS}",
                "created_at": at,
                "updated_at": at,
                "received_at": at,
                "closed_at": None if i % 100 == 1 or pending else at,
            }
        )
        links.append(
            {
                "application_id": app_id,
                "kind": "licence",
                "subject": credential(i),
                "status": "pending" if pending else "fetched",
                "updated_at": at,
            }
        )
        evidence.append(
            {
                "kind": "licence",
                "subject": credential(i),
                "source_platform": "licence",
                "fetched_at": at,
                "fields": {},
            }
        )
        keys.append(
            {
                "client": f"client-{i % OWNERS}",
                "key": f"key-{i}",
                "request_hash": "0" * 64,
                "application_id": app_id,
                "created_at": at,
                "scope": "applications",
                "resource_id": app_id,
            }
        )
        for kind in (ApplicationEvent.RECEIVED, ApplicationEvent.DOSSIER_COMPLETED):
            outbox.append(outbox_row(APPLICATION_EVENTS, kind, app_id, app_id, at, sent=True))
        if i % 3 == 0:
            cases.append(
                {
                    "case_no": f"C{i:08d}",
                    "item_code": "x",
                    "application_id": app_id,
                    "received_at": at,
                }
            )
            for seq in (1, 2):
                event_id = str(uuid.uuid4())
                stages.append(
                    {
                        "application_id": app_id,
                        "seq": seq,
                        "stage": "accepted",
                        "handler": "h",
                        "occurred_at": at,
                        "event_id": event_id,
                        "created_at": at,
                        "push_tracked_at": at,
                    }
                )
                deliveries.append(delivery("ywtb-status", event_id, app_id, at))
            alerts.append(
                {"application_id": app_id, "scope": "total", "threshold": "0.8", "created_at": at}
            )
        if i % 3 == 1:
            permit_id = f"permit-{i:06d}"
            permits.append(
                {
                    "id": permit_id,
                    "application_id": app_id,
                    "status": "requested" if i % 300 == 1 else "approved",
                    "request": {},
                    "created_at": at,
                    "updated_at": at,
                }
            )
            outbox.append(
                outbox_row(PERMIT_EVENTS, PermitEvent.REQUESTED, app_id, permit_id, at, sent=True)
            )
        deliveries.append(
            {**delivery("timeline", str(uuid.uuid4()), app_id, at), "status": "retrying"}
            if i % 500 == 0
            else delivery("timeline", str(uuid.uuid4()), app_id, at)
        )
    outbox[-5:] = [{**row, "sent_at": None} for row in outbox[-5:]]  # the relay's next batch
    return {
        Application: apps,
        ApplicationEvidence: links,
        StoredEvidence: evidence,
        OutboxRow: outbox,
        IdempotencyKey: keys,
        Case: cases,
        StageChange: stages,
        Delivery: deliveries,
        Permit: permits,
        DeadlineAlert: alerts,
    }


def outbox_row(
    topic: str, type_: str, key: str, subject: str, at: Any, *, sent: bool
) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "topic": topic,
        "key": key,
        "key_hash": key_hash(key),
        "type": type_,
        "source": "/ywtb-connector",
        "subject": subject,
        "time": at,
        "data": {},
        "created_at": at,
        "sent_at": at if sent else None,
    }


def delivery(worker: str, event_id: str, application_id: str, at: Any) -> dict[str, Any]:
    return {
        "worker": worker,
        "event_id": event_id,
        "application_id": application_id,
        "event_type": "x",
        "status": "delivered",
        "attempts": 1,
        "updated_at": at,
    }


@contextmanager
def recording(engine: AsyncEngine) -> Iterator[list[tuple[str, Any]]]:
    """Every single statement (not executemany) the engine sends that reads or changes rows."""
    sent: list[tuple[str, Any]] = []

    def record(_c: Any, _cursor: Any, sql: str, params: Any, _ctx: Any, many: bool) -> None:
        if not many and sql.lstrip().split(None, 1)[0].upper() in {"SELECT", "UPDATE", "DELETE"}:
            sent.append((sql, params))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


def scans(plan: dict[str, Any], partial: set[str]) -> Iterator[tuple[str, str]]:
    """(how, relation) of every node of a plan that reads a whole table or a whole index."""
    node, relation = plan["Node Type"], plan.get("Relation Name", "")
    if node == "Seq Scan":
        yield node, relation
    elif (
        node in {"Index Scan", "Index Only Scan"}
        and "Index Cond" not in plan
        and plan["Index Name"] not in partial
    ):
        yield f"full {node} of {plan['Index Name']}", relation
    for child in plan.get("Plans", []):
        yield from scans(child, partial)


async def test_hot_queries_use_an_index(
    connector: Container, platforms: dict[str, Platform]
) -> None:
    now = utcnow()
    async with connector.sessions() as session, session.begin():
        for model, values in rows(now).items():
            await session.execute(insert(model), values)
    async with connector.engine.connect() as conn:
        await conn.execute(text("ANALYZE"))
        big = {
            name
            for name, tuples in await conn.execute(
                text(
                    "SELECT relname, reltuples FROM pg_class"
                    " WHERE relnamespace = current_schema()::regnamespace AND relkind = 'r'"
                )
            )
            if tuples >= BIG
        }
        partial = set(
            (
                await conn.execute(
                    text(
                        "SELECT indexname FROM pg_indexes"
                        " WHERE schemaname = current_schema() AND indexdef LIKE '% WHERE %'"
                    )
                )
            ).scalars()
        )
    assert {"applications", "outbox", "evidence", "idempotency_keys", "stage_changes"} <= big

    await connector.bus.ensure_topics([APPLICATION_EVENTS, PERMIT_EVENTS])
    first = await connector.applications.submit(WARM, client="client-1", idempotency_key="k1")
    owner = Client("client-3", frozenset({"applications:read"}), rate_per_s=100)
    with recording(connector.engine) as sent:
        assert await Relay(
            connector.sessions, connector.bus, connector.settings.relay
        ).publish_once()
        assert await Sweeper(connector).open_work()
        assert (await connector.deadlines.evaluate())["evaluated"] >= N // 100
        await connector.applications.submit(WARM, client="client-1", idempotency_key="k2")
        replay = await connector.applications.submit(WARM, client="client-1", idempotency_key="k1")
        assert settled(replay.application) == settled(first.application)
        await connector.applications.get("app-000003", owner)
        by_case = ApplicationFilter(case_no="C00000003")
        page = await connector.applications.search(by_case, client=owner, cursor=None, limit=10)
        assert [a.id for a in page.items] == ["app-000003"]
        by_credential = ApplicationFilter(credential_no=credential(3))
        page = await connector.applications.search(
            by_credential, client=owner, cursor=None, limit=10
        )
        assert [a.id for a in page.items] == ["app-000003"]

    scanned: list[str] = []
    async with connector.engine.connect() as conn:
        # Whether an index serves each query, whatever the planner prefers on tables this small.
        await conn.execute(text("SET enable_seqscan = off"))
        for sql, params in sent:
            result = await conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}", params)
            plan = result.scalar_one()
            plan = json.loads(plan) if isinstance(plan, str) else plan
            whole = sorted(
                f"{how} on {rel}" for how, rel in scans(plan[0]["Plan"], partial) if rel in big
            )
            if whole:
                scanned.append(f"{whole} in: {' '.join(sql.split())[:300]}")
    assert len(sent) > 20
    assert not scanned, "\n".join(scanned)


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


async def test_a_backlog_behind_stale_statistics_comes_off_the_unsent_index_in_order(
    connector: Container,
) -> None:
    """Statistics taken while the outbox was empty (a new store) say the unsent rows are a
    handful; then a backlog builds (the broker away for a while). The relay's batch must still
    be read off the front of ``ix_outbox_unsent``, not fetched whole and sorted, every round,
    however long the backlog."""
    now = utcnow()
    backlog = [
        outbox_row(APPLICATION_EVENTS, "r", f"app-{i}", f"app-{i}", now, sent=False)
        for i in range(5000)
    ]
    async with connector.engine.begin() as conn:
        await conn.execute(text("ANALYZE outbox"))
        await conn.execute(insert(OutboxRow), backlog)

    sent: list[tuple[str, Any]] = []

    def record(_c: Any, _cursor: Any, sql: str, params: Any, _ctx: Any, many: bool) -> None:
        sent.append((sql, params))

    event.listen(connector.engine.sync_engine, "before_cursor_execute", record)
    try:
        await connector.bus.ensure_topics([APPLICATION_EVENTS])
        relay = Relay(connector.sessions, connector.bus, connector.settings.relay)
        assert await relay.publish_once() == connector.settings.relay.batch_size
        await relay.release()
    finally:
        event.remove(connector.engine.sync_engine, "before_cursor_execute", record)
    [(at, batch), *_read_ahead] = [
        (i, (sql, params))
        for i, (sql, params) in enumerate(sent)
        if sql.lstrip().startswith("SELECT") and "FROM outbox \n" in sql
    ]
    setting = [sql for sql, _ in sent[:at] if sql.startswith("SET LOCAL")]

    async def plan(*settings: str) -> list[dict[str, Any]]:
        """The batch's plan on a connection set as the relay's was when it read the batch."""
        async with connector.engine.begin() as conn:
            for sql in settings:
                await conn.exec_driver_sql(sql)
            result = await conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {batch[0]}", batch[1])
            found = result.scalar_one()
            await conn.rollback()
        found = json.loads(found) if isinstance(found, str) else found
        return list(nodes(found[0]["Plan"]))

    relays = await plan(*setting)
    assert "Sort" not in {n["Node Type"] for n in relays}, relays
    assert {n.get("Index Name") for n in relays if n["Node Type"] == "Index Scan"} == {
        "ix_outbox_unsent"
    }
    # What the planner does with these statistics when left to itself: fetch all, then sort.
    assert "Sort" in {n["Node Type"] for n in await plan()}
