"""The internal API of 一证办电: applications and the evidence store."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response

from gateway.api.deps import ClientDep, ContainerDep
from gateway.api.problems import problem_responses
from gateway.audit import person, record_read
from schemas.applications import (
    PROJECT_CODE,
    ApplicationRequest,
    ApplicationResource,
    EvidenceKind,
    EvidenceRecord,
    EvidenceStatus,
)
from schemas.credentials import CredentialType, normalise_credential
from schemas.errors import InvalidInput

router = APIRouter(prefix="/api/v1", tags=["一证办电"])

PROBLEMS = problem_responses(401, 404, 422, 503)


@router.post(
    "/applications",
    status_code=201,
    summary="Submit a 一证办电 application with one credential",
    responses={200: {"description": "replay of an earlier request with the same key"}, **PROBLEMS},
)
async def submit_application(
    body: ApplicationRequest,
    client: ClientDep,
    container: ContainerDep,
    response: Response,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)
    ] = None,
) -> ApplicationResource:
    submitted = await container.applications.submit(
        body, client=client, idempotency_key=idempotency_key
    )
    response.headers["Location"] = f"/api/v1/applications/{submitted.application.id}"
    if not submitted.created:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return submitted.application


@router.get(
    "/applications/{application_id}", summary="An application and its dossier", responses=PROBLEMS
)
async def get_application(
    application_id: str, _client: ClientDep, container: ContainerDep
) -> ApplicationResource:
    application = await container.applications.get(application_id)
    applicant = application.applicant
    await record_read(
        container.exchanges,
        _client,
        "GET application",
        application_id,
        application.model_dump_json(),
        person(applicant.credential_type.value, applicant.credential_no),
    )
    return application


@router.get(
    "/evidence/licences/{uscc}",
    summary="The business licence of a firm (from the store, or fetched)",
    responses=PROBLEMS,
)
async def get_licence_evidence(
    uscc: str, _client: ClientDep, container: ContainerDep
) -> EvidenceRecord:
    try:
        uscc = normalise_credential(CredentialType.USCC, uscc)
    except ValueError as exc:
        raise InvalidInput("uscc", str(exc)) from exc
    return await _evidence(container, EvidenceKind.LICENCE, uscc, _client)


@router.get(
    "/evidence/projects/{project_code}",
    summary="The approval or filing of a project (from the store, or fetched)",
    responses=PROBLEMS,
)
async def get_project_evidence(
    project_code: str, _client: ClientDep, container: ContainerDep
) -> EvidenceRecord:
    if not PROJECT_CODE.fullmatch(project_code):
        raise InvalidInput("project_code", "expected YYYY-DDDDDD-II-TT-NNNNNN with TT 01, 02 or 03")
    return await _evidence(container, EvidenceKind.PROJECT, project_code, _client)


async def _evidence(
    container: ContainerDep, kind: EvidenceKind, subject: str, client: str
) -> EvidenceRecord:
    evidence = await container.evidence.obtain_and_keep(kind, subject)
    record = EvidenceRecord(
        kind=kind, subject=subject, status=EvidenceStatus.FETCHED, **evidence.snapshot()
    )
    await record_read(
        container.exchanges, client, f"GET evidence {kind.value}", subject, record.model_dump_json()
    )
    return record
