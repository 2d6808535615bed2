"""The evidence store keeps the records of one application in one statement, on both stores.

``keep`` writes every newly fetched record with its provenance in one multi-row
upsert: a record of a kind and subject already on file is refreshed in place
(same row id), and a record read from the store is not written again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, timedelta

import pytest
from sqlalchemy import select

from gateway.evidence import Evidence, keep
from gateway.protect import install, keyring_of
from gateway.settings import Settings, StoreSettings
from gateway.store.db import Sessions, open_store, transaction
from gateway.store.models import StoredEvidence, utcnow
from schemas.applications import EvidenceKind
from tests.integration.test_statement_budget import counting
from tests.unit.test_dossier import CODE, FIRM, LICENCE, PROJECT


@pytest.fixture
async def sessions(store_settings: StoreSettings) -> AsyncIterator[Sessions]:
    install(keyring_of(Settings().protection))  # as bootstrap does: the sandbox's data keys
    engine, sessions = await open_store(store_settings)
    yield sessions
    await engine.dispose()


async def stored(sessions: Sessions) -> dict[str, StoredEvidence]:
    async with sessions() as session:
        return {row.kind: row for row in await session.scalars(select(StoredEvidence))}


async def test_the_records_of_an_application_are_kept_in_one_statement_with_their_provenance(
    sessions: Sessions,
) -> None:
    fetched = utcnow()
    licence = Evidence(EvidenceKind.LICENCE, FIRM, LICENCE, fetched, from_store=False)
    project = Evidence(EvidenceKind.PROJECT, CODE, PROJECT, fetched, from_store=False)

    with counting(sessions.engine) as trips:
        async with transaction(sessions) as session:
            ids = await keep(session, licence, project)
    [statement] = trips.statements  # one round trip for both rows
    assert statement.startswith("INSERT INTO evidence")

    rows = await stored(sessions)
    assert ids == {
        EvidenceKind.LICENCE: rows["licence"].id,
        EvidenceKind.PROJECT: rows["project"].id,
    }
    for row, evidence in ((rows["licence"], licence), (rows["project"], project)):
        assert (row.subject, row.fetched_at, row.fields) == (
            evidence.subject,
            fetched,
            evidence.record.model_dump(mode="json"),
        )
    assert rows["licence"].source_platform.startswith("电子证照库")
    assert (rows["licence"].document_no, rows["licence"].issued_on) == (
        f"YYZZ{FIRM}",
        date(2021, 3, 9),
    )
    assert rows["project"].source_platform.startswith("投资项目在线审批监管平台")
    assert (rows["project"].document_no, rows["project"].issued_on) == (
        "沪发改能源〔2020〕77号",
        date(2020, 6, 18),
    )

    # Fetched again: the licence's row is refreshed in place; a record read from the
    # store is not written again.
    later = fetched + timedelta(minutes=5)
    renamed = LICENCE.model_copy(update={"name": "上海新名称有限公司"})
    refreshed = Evidence(EvidenceKind.LICENCE, FIRM, renamed, later, from_store=False)
    on_file = Evidence(
        EvidenceKind.PROJECT, CODE, PROJECT, fetched, True, ids[EvidenceKind.PROJECT]
    )
    async with transaction(sessions) as session:
        assert await keep(session, refreshed, on_file) == ids
    again = await stored(sessions)
    assert (again["licence"].fetched_at, again["licence"].fields["name"]) == (
        later,
        "上海新名称有限公司",
    )
    assert again["project"].fetched_at == fetched
