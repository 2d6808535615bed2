"""The internal API of 一证办电: applications and the evidence store."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Response

from gateway.api.deps import ApplicationId, ContainerDep, EvidenceClient, ReadClient, WriteClient
from gateway.api.problems import problem_responses
from schemas.applications import (
    CREDENTIAL_PATTERN,
    PROJECT_CODE_PATTERN,
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
    client: WriteClient,
    container: ContainerDep,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=200,
            pattern=r"^[\x21-\x7e]+$",
            description="visible ASCII; the same key and body answer the same application",
        ),
    ] = None,
) -> ApplicationResource:
    submitted = await container.applications.submit(
        body, client=client.name, idempotency_key=idempotency_key
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
    application_id: ApplicationId, client: ReadClient, container: ContainerDep
) -> ApplicationResource:
    return await container.applications.get(application_id, client)


@router.get(
    "/evidence/licences/{uscc}",
    summary="The business licence of a firm (from the store, or fetched)",
    responses=PROBLEMS,
)
async def get_licence_evidence(
    uscc: Annotated[str, Path(pattern=CREDENTIAL_PATTERN, description="统一社会信用代码")],
    _client: EvidenceClient,
    container: ContainerDep,
) -> EvidenceRecord:
    try:
        uscc = normalise_credential(CredentialType.USCC, uscc)
    except ValueError as exc:
        raise InvalidInput("uscc", str(exc)) from exc
    return await _evidence(container, EvidenceKind.LICENCE, uscc)


@router.get(
    "/evidence/projects/{project_code}",
    summary="The approval or filing of a project (from the store, or fetched)",
    responses=PROBLEMS,
)
async def get_project_evidence(
    project_code: Annotated[str, Path(pattern=PROJECT_CODE_PATTERN, description="投资项目代码")],
    _client: EvidenceClient,
    container: ContainerDep,
) -> EvidenceRecord:
    return await _evidence(container, EvidenceKind.PROJECT, project_code)


async def _evidence(container: ContainerDep, kind: EvidenceKind, subject: str) -> EvidenceRecord:
    evidence = await container.evidence.obtain_and_keep(kind, subject)
    return EvidenceRecord(
        kind=kind, subject=subject, status=EvidenceStatus.FETCHED, **evidence.snapshot()
    )
