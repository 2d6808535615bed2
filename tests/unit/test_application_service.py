"""一证办电 through ``ApplicationService``, over in-memory platforms and a real SQLite store.

The service is built as ``gateway/bootstrap.py`` builds it, with the fakes of
``tests/fakes.py`` for the two registries; aiosqlite opens no socket. Only the
public API (``submit``, ``get``, ``check_visible``) is driven, and what a user
would check is looked at: the resource, the rows, the calls the platforms got.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import func, select

from adapters.ports import LicenceRegistry, ProjectRegistry
from gateway.access import Client
from gateway.applications import ApplicationService, Submitted
from gateway.deadlines import DeadlineService
from gateway.evidence import EvidenceService
from gateway.protect import install, keyring_of
from gateway.settings import DeadlineSettings, EvidenceSettings, Settings, StoreSettings
from gateway.store.db import Sessions, open_store
from gateway.store.models import (
    Application,
    ApplicationEvidence,
    IdempotencyKey,
    OutboxRow,
    StoredEvidence,
    utcnow,
)
from schemas.applications import (
    ApplicationRequest,
    ApplicationResource,
    ApplicationStatus,
    EvidenceKind,
    Reason,
)
from schemas.deadlines import load_calendar
from schemas.errors import InvalidInput, NotFound
from schemas.events import ApplicationEvent
from schemas.evidence import BusinessLicence, ProjectApproval, ProjectStatus, RegistrationStatus
from tests.fakes import FakeLicenceRegistry, FakeProjectRegistry
from tests.unit.test_dossier import (
    CODE,
    FIRM,
    HIGH_NEW,
    LICENCE,
    LOW,
    NAME,
    OTHER_FIRM,
    PROJECT,
    RESIDENT,
    request,
)

M = TypeVar("M")

OWNER = Client("marketing", frozenset({"applications:write", "applications:read"}), 10.0)
STRANGER = Client("other-system", frozenset({"applications:write", "applications:read"}), 10.0)
EVERYONE = Client("ops", frozenset({"applications:read", "applications:all"}), 10.0)

LOW_VOLTAGE = request(level="0.4kV", capacity=100)
WITH_PROJECT = request(level="35kV", capacity=12_000, project_code=CODE)

RECEIVED = ApplicationEvent.RECEIVED
FETCHED = ApplicationEvent.EVIDENCE_FETCHED
COMPLETED = ApplicationEvent.DOSSIER_COMPLETED
REJECTED = ApplicationEvent.REJECTED


# --- the service, built as bootstrap builds it -----------------------------------


@pytest.fixture(scope="session")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store at the newest migration, made once: each test starts from a copy of it."""
    path = tmp_path_factory.mktemp("store") / "ywtb.db"

    async def migrate() -> None:
        engine, _ = await open_store(StoreSettings(url=f"sqlite+aiosqlite:///{path}"))
        await engine.dispose()

    asyncio.run(migrate())
    return path


@pytest.fixture
async def sessions(migrated: Path, tmp_path: Path) -> AsyncIterator[Sessions]:
    install(keyring_of(Settings().protection))  # as bootstrap does: the sandbox's data keys
    path = tmp_path / "ywtb.db"
    shutil.copyfile(migrated, path)
    engine, sessions = await open_store(StoreSettings(url=f"sqlite+aiosqlite:///{path}"))
    yield sessions
    await engine.dispose()


def application_service(
    sessions: Sessions,
    licences: LicenceRegistry,
    projects: ProjectRegistry,
    evidence: EvidenceSettings | None = None,
) -> ApplicationService:
    """``ApplicationService`` as ``gateway.bootstrap.bootstrap`` wires it."""
    evidence = evidence or EvidenceSettings()
    deadline_settings = DeadlineSettings()
    deadlines = DeadlineService(
        sessions, deadline_settings, load_calendar(deadline_settings.calendar_files)
    )
    return ApplicationService(
        sessions, EvidenceService(licences, projects, sessions, evidence), evidence, deadlines
    )


@pytest.fixture
def licences() -> FakeLicenceRegistry:
    return FakeLicenceRegistry(LICENCE)


@pytest.fixture
def projects() -> FakeProjectRegistry:
    return FakeProjectRegistry(PROJECT)


@pytest.fixture
def service(
    sessions: Sessions, licences: FakeLicenceRegistry, projects: FakeProjectRegistry
) -> ApplicationService:
    return application_service(sessions, licences, projects)


async def submit(
    service: ApplicationService,
    asked: ApplicationRequest,
    *,
    client: Client = OWNER,
    key: str | None = None,
) -> Submitted:
    return await service.submit(asked, client=client.name, idempotency_key=key)


async def rows(sessions: Sessions, model: type[M], *where: Any) -> list[M]:
    async with sessions() as session:
        return list((await session.scalars(select(model).where(*where))).all())


async def count(sessions: Sessions, model: type[Any]) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def events(sessions: Sessions, application_id: str) -> list[OutboxRow]:
    """The application's events waiting in the outbox, in publication order."""
    async with sessions() as session:
        found = await session.scalars(
            select(OutboxRow).where(OutboxRow.key == application_id).order_by(OutboxRow.seq)
        )
        return list(found.all())


def settled(resource: ApplicationResource) -> dict[str, Any]:
    """The resource less its clock, which is computed at each read."""
    return resource.model_dump(exclude={"deadline"})


# --- a ready dossier -------------------------------------------------------------


async def test_one_credential_gives_a_ready_dossier_fetching_each_record_once(
    service: ApplicationService,
    sessions: Sessions,
    licences: FakeLicenceRegistry,
    projects: FakeProjectRegistry,
) -> None:
    submitted = await submit(service, WITH_PROJECT)

    application = submitted.application
    assert submitted.created
    assert application.status is ApplicationStatus.READY
    assert application.reasons == []
    assert [step.code for step in application.procedures] == HIGH_NEW
    assert application.time_limit_days == 150
    assert licences.calls == [FIRM] and projects.calls == [CODE]
    licence, project = application.evidence  # by kind: licence, project
    assert (licence.kind, licence.subject, licence.status) == (
        EvidenceKind.LICENCE,
        FIRM,
        "fetched",
    )
    assert licence.source_platform.startswith("电子证照库")
    assert (licence.issuing_authority, licence.document_no) == (
        "上海市市场监督管理局",
        f"YYZZ{FIRM}",
    )
    assert (licence.issued_on, licence.valid_from, licence.valid_to) == (
        "2021-03-09",
        "2019-08-16",
        None,
    )
    assert licence.fields == LICENCE.model_dump(mode="json")
    assert (project.kind, project.subject, project.status) == (
        EvidenceKind.PROJECT,
        CODE,
        "fetched",
    )
    assert project.source_platform.startswith("投资项目在线审批监管平台")
    assert (project.document_no, project.issued_on) == ("沪发改能源〔2020〕77号", "2020-06-18")
    assert project.fields == PROJECT.model_dump(mode="json")
    assert licence.fetched_at is not None and project.fetched_at is not None
    assert application.deadline is not None

    assert settled(await service.get(application.id)) == settled(application)
    [row] = await rows(sessions, Application)
    assert (row.id, row.owner, row.status) == (application.id, "marketing", "ready")
    assert row.dossier_completed_at is not None
    outbox = await events(sessions, application.id)
    assert [e.type for e in outbox] == [RECEIVED, FETCHED, FETCHED, COMPLETED]
    assert outbox[0].data["required_evidence"] == ["licence", "project"]
    assert outbox[-1].data == {"application_id": application.id, "status": "ready", "reasons": []}
    stored = await rows(sessions, StoredEvidence)
    assert sorted((e.kind, e.subject) for e in stored) == [("licence", FIRM), ("project", CODE)]


# --- rejections reach the resource ------------------------------------------------


@pytest.mark.parametrize(
    ("licence", "project", "asked", "reason"),
    [
        (
            None,
            PROJECT,
            LOW_VOLTAGE,
            Reason(
                code="licence_not_found",
                message=f"电子证照库中未找到统一社会信用代码 {FIRM} 的营业执照",
                evidence=EvidenceKind.LICENCE,
            ),
        ),
        (
            LICENCE.model_copy(update={"registration_status": RegistrationStatus.REVOKED}),
            PROJECT,
            LOW_VOLTAGE,
            Reason(
                code="licence_not_active",
                message="营业执照登记状态为“吊销”，主体不在存续状态，不能受理",
                evidence=EvidenceKind.LICENCE,
            ),
        ),
        (
            LICENCE.model_copy(update={"valid_to": date(2023, 6, 30)}),
            PROJECT,
            LOW_VOLTAGE,
            Reason(
                code="licence_expired",
                message="营业执照营业期限已于 2023-06-30 届满",
                evidence=EvidenceKind.LICENCE,
            ),
        ),
        (
            LICENCE,
            None,
            WITH_PROJECT,
            Reason(
                code="project_not_found",
                message="投资项目在线审批监管平台中未找到该项目代码的批文",
                evidence=EvidenceKind.PROJECT,
            ),
        ),
        (
            LICENCE,
            PROJECT.model_copy(update={"status": ProjectStatus.REVOKED}),
            WITH_PROJECT,
            Reason(
                code="project_revoked",
                message=f"项目 {CODE} 的批文（沪发改能源〔2020〕77号）已撤销",
                evidence=EvidenceKind.PROJECT,
            ),
        ),
        (
            LICENCE,
            PROJECT.model_copy(update={"owner_uscc": OTHER_FIRM}),
            WITH_PROJECT,
            Reason(
                code="project_owner_mismatch",
                message=f"项目单位统一社会信用代码 {OTHER_FIRM} 与申请人 {FIRM} 不一致",
                evidence=EvidenceKind.PROJECT,
            ),
        ),
        (
            LICENCE,
            PROJECT.model_copy(update={"owner_name": "上海临港绿能科技有限公司"}),
            WITH_PROJECT,
            Reason(
                code="name_mismatch",
                message=f"项目单位名称“上海临港绿能科技有限公司”与营业执照名称“{NAME}”不一致",
                evidence=EvidenceKind.PROJECT,
            ),
        ),
    ],
    ids=[
        "licence_not_found",
        "licence_not_active",
        "licence_expired",
        "project_not_found",
        "project_revoked",
        "project_owner_mismatch",
        "name_mismatch",
    ],
)
async def test_each_rejection_reaches_the_resource_with_its_clerk_message(
    sessions: Sessions,
    licence: BusinessLicence | None,
    project: ProjectApproval | None,
    asked: ApplicationRequest,
    reason: Reason,
) -> None:
    licences = FakeLicenceRegistry(*[r for r in [licence] if r is not None])
    projects = FakeProjectRegistry(*[r for r in [project] if r is not None])
    service = application_service(sessions, licences, projects)

    application = (await submit(service, asked)).application

    assert application.status is ApplicationStatus.REJECTED
    assert application.reasons == [reason]
    [status] = [e.status for e in application.evidence if e.kind == reason.evidence]
    assert status == ("not_found" if reason.code.endswith("_not_found") else "fetched")
    assert (await service.get(application.id)).reasons == [reason]
    [row] = await rows(sessions, Application)
    assert row.status == "rejected" and row.reasons == [reason.model_dump(mode="json")]
    outbox = await events(sessions, application.id)
    assert outbox[-1].type == REJECTED
    assert outbox[-1].data["reasons"] == [reason.model_dump(mode="json")]
    assert COMPLETED not in [e.type for e in outbox]
    assert licences.calls == [FIRM]
    assert projects.calls == ([CODE] if asked.project_code else [])


# --- a resident (居民身份证) ---------------------------------------------------------


async def test_a_resident_at_low_voltage_is_ready_without_asking_any_platform(
    service: ApplicationService,
    sessions: Sessions,
    licences: FakeLicenceRegistry,
    projects: FakeProjectRegistry,
) -> None:
    application = (
        await submit(service, request(credential=RESIDENT, level="0.4kV", capacity=16))
    ).application

    assert application.status is ApplicationStatus.READY
    assert application.evidence == [] and application.reasons == []
    assert [step.code for step in application.procedures] == LOW
    assert application.time_limit_days == 10
    assert application.applicant_parts.birth_date == date(1980, 1, 1)
    assert licences.calls == [] and projects.calls == []
    assert [e.type for e in await events(sessions, application.id)] == [RECEIVED, COMPLETED]


async def test_a_resident_with_a_project_code_is_checked_on_the_project_alone(
    service: ApplicationService, licences: FakeLicenceRegistry, projects: FakeProjectRegistry
) -> None:
    asked = request(credential=RESIDENT, level="0.4kV", capacity=16, project_code=CODE)

    application = (await submit(service, asked)).application

    assert [e.kind for e in application.evidence] == [EvidenceKind.PROJECT]
    assert licences.calls == [] and projects.calls == [CODE]
    # A project's owner is a firm (统一社会信用代码), never the resident's identity number.
    assert [r.code for r in application.reasons] == ["project_owner_mismatch"]


@pytest.mark.parametrize(
    ("asked", "field"),
    [
        (request(credential=RESIDENT, level="10kV", capacity=630), "request.voltage_level"),
        (request(level="35kV", capacity=12_000), "project_code"),
        (
            LOW_VOLTAGE.model_copy(update={"received_at": utcnow() + timedelta(hours=1)}),
            "received_at",
        ),
    ],
    ids=["resident-above-0.4kV", "35kV-without-project", "received-in-the-future"],
)
async def test_a_request_against_the_rules_is_refused_storing_nothing_asking_no_one(
    service: ApplicationService,
    sessions: Sessions,
    licences: FakeLicenceRegistry,
    projects: FakeProjectRegistry,
    asked: ApplicationRequest,
    field: str,
) -> None:
    with pytest.raises(InvalidInput) as refused:
        await submit(service, asked, key="order-1")

    assert refused.value.field == field
    assert await count(sessions, Application) == 0
    assert await count(sessions, OutboxRow) == 0
    assert await count(sessions, IdempotencyKey) == 0
    assert licences.calls == [] and projects.calls == []


# --- a slow or unavailable platform ---------------------------------------------


@pytest.mark.parametrize("fault", ["slow", "unavailable"])
async def test_a_slow_or_unavailable_platform_leaves_its_evidence_pending(
    sessions: Sessions, licences: FakeLicenceRegistry, projects: FakeProjectRegistry, fault: str
) -> None:
    if fault == "slow":
        licences.delay_s = 60.0
    else:
        licences.unavailable()
    service = application_service(sessions, licences, projects, EvidenceSettings(budget_s=0.05))

    started = time.monotonic()
    application = (await submit(service, WITH_PROJECT)).application

    assert time.monotonic() - started < 10, "the answer does not wait for the slow platform"
    assert application.status is ApplicationStatus.EVIDENCE_PENDING
    assert application.reasons == []
    assert {e.kind: e.status for e in application.evidence} == {
        EvidenceKind.LICENCE: "pending",
        EvidenceKind.PROJECT: "fetched",
    }
    assert licences.calls == [FIRM] and projects.calls == [CODE]
    [row] = await rows(sessions, Application)
    assert row.status == "evidence_pending" and row.dossier_completed_at is None
    outbox = await events(sessions, application.id)
    assert [e.type for e in outbox] == [RECEIVED, FETCHED]
    assert outbox[1].data["kind"] == "project"
    assert [e.kind for e in await rows(sessions, StoredEvidence)] == ["project"]


async def test_every_platform_down_still_answers_with_the_application_pending(
    service: ApplicationService,
    sessions: Sessions,
    licences: FakeLicenceRegistry,
    projects: FakeProjectRegistry,
) -> None:
    licences.unavailable()
    projects.unavailable("answered 503")

    submitted = await submit(service, WITH_PROJECT)

    assert submitted.created
    assert submitted.application.status is ApplicationStatus.EVIDENCE_PENDING
    assert {e.status for e in submitted.application.evidence} == {"pending"}
    assert [e.type for e in await events(sessions, submitted.application.id)] == [RECEIVED]


# --- evidence on file ----------------------------------------------------------


async def test_evidence_on_file_and_still_valid_is_reused(
    service: ApplicationService, sessions: Sessions, licences: FakeLicenceRegistry
) -> None:
    first = (await submit(service, LOW_VOLTAGE)).application
    second = (await submit(service, LOW_VOLTAGE)).application

    assert first.id != second.id
    assert second.status is ApplicationStatus.READY
    assert licences.calls == [FIRM], "asked once, for the first application"
    assert second.evidence[0].fetched_at == first.evidence[0].fetched_at
    assert second.evidence[0].fields == first.evidence[0].fields
    links = {link.application_id: link.reused for link in await rows(sessions, ApplicationEvidence)}
    assert links == {first.id: False, second.id: True}
    assert await count(sessions, StoredEvidence) == 1
    reused = [e for e in await events(sessions, second.id) if e.type == FETCHED]
    assert [e.data["reused"] for e in reused] == [True]


@pytest.mark.parametrize(
    ("licence", "evidence"),
    [
        (LICENCE.model_copy(update={"valid_to": date(2023, 6, 30)}), EvidenceSettings()),
        (LICENCE, EvidenceSettings(max_age_s=0)),
    ],
    ids=["past-its-validity", "older-than-max-age"],
)
async def test_evidence_on_file_no_longer_valid_or_fresh_is_fetched_again(
    sessions: Sessions, licence: BusinessLicence, evidence: EvidenceSettings
) -> None:
    licences = FakeLicenceRegistry(licence)
    service = application_service(sessions, licences, FakeProjectRegistry(), evidence)

    first = (await submit(service, LOW_VOLTAGE)).application
    second = (await submit(service, LOW_VOLTAGE)).application

    assert licences.calls == [FIRM, FIRM]
    assert second.evidence[0].fetched_at != first.evidence[0].fetched_at
    assert await count(sessions, StoredEvidence) == 1, "the stored record is refreshed"


# --- Idempotency-Key --------------------------------------------------------------


async def test_the_same_idempotency_key_replays_the_first_answer_without_fetching(
    service: ApplicationService,
    sessions: Sessions,
    licences: FakeLicenceRegistry,
    projects: FakeProjectRegistry,
) -> None:
    first = await submit(service, WITH_PROJECT, key="order-2026-0001")
    outbox = await count(sessions, OutboxRow)

    replay = await submit(service, WITH_PROJECT, key="order-2026-0001")

    assert first.created and not replay.created
    assert settled(replay.application) == settled(first.application)
    assert licences.calls == [FIRM] and projects.calls == [CODE]
    assert await count(sessions, Application) == 1
    assert await count(sessions, OutboxRow) == outbox
    [key] = await rows(sessions, IdempotencyKey)
    assert (key.client, key.key, key.scope) == ("marketing", "order-2026-0001", "applications")
    assert key.application_id == key.resource_id == first.application.id


async def test_the_same_idempotency_key_with_another_body_is_refused(
    service: ApplicationService, sessions: Sessions, licences: FakeLicenceRegistry
) -> None:
    await submit(service, WITH_PROJECT, key="order-2026-0001")
    other = request(level="35kV", capacity=15_000, project_code=CODE)

    with pytest.raises(InvalidInput) as refused:
        await submit(service, other, key="order-2026-0001")

    assert refused.value.field == "Idempotency-Key"
    assert refused.value.reason == "already used with a different request body"
    assert await count(sessions, Application) == 1
    assert licences.calls == [FIRM]


async def test_an_idempotency_key_belongs_to_its_client(
    service: ApplicationService, sessions: Sessions
) -> None:
    mine = await submit(service, LOW_VOLTAGE, key="order-1")
    theirs = await submit(service, LOW_VOLTAGE, client=STRANGER, key="order-1")

    assert mine.created and theirs.created
    assert mine.application.id != theirs.application.id
    assert sorted(row.owner for row in await rows(sessions, Application)) == [
        "marketing",
        "other-system",
    ]


# --- who sees an application ----------------------------------------------------


async def test_another_client_cannot_see_the_application(service: ApplicationService) -> None:
    application = (await submit(service, LOW_VOLTAGE)).application

    with pytest.raises(NotFound):
        await service.get(application.id, STRANGER)
    with pytest.raises(NotFound):
        await service.check_visible(application.id, STRANGER)
    await service.check_visible(application.id, OWNER)
    assert (await service.get(application.id, OWNER)).id == application.id
    assert (await service.get(application.id, EVERYONE)).id == application.id
    with pytest.raises(NotFound):
        await service.get("no-such-application", OWNER)
