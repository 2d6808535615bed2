"""The internal API of 一证办电: applications and the evidence store."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Response

from gateway.api.deps import ApplicationId, ContainerDep, EvidenceClient, ReadClient, WriteClient
from gateway.api.problems import problem_responses
from gateway.audit import person, record_read
from schemas.applications import (
    CREDENTIAL_PATTERN,
    PROJECT_CODE_PATTERN,
    ApplicationFilter,
    ApplicationPage,
    ApplicationRequest,
    ApplicationResource,
    ApplicationStatus,
    EvidenceKind,
    EvidenceRecord,
    EvidenceStatus,
)
from schemas.credentials import CredentialType, normalise_credential
from schemas.deadlines import DeadlineState
from schemas.errors import InvalidInput
from schemas.text import IsoDateTime

router = APIRouter(prefix="/api/v1", tags=["一证办电"])

PROBLEMS = problem_responses(401, 404, 422, 503)

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="visible ASCII; a retry with the same key and body answers the first (200)",
    ),
]
REPLAYED: dict[int | str, dict[str, Any]] = {
    200: {"description": "replay of an earlier request with the same key"}
}


def answered_again(response: Response, created: bool) -> None:
    """A replay of an earlier request with the same key: 200 and ``Idempotent-Replayed``."""
    if not created:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"


def json_answer(resource: ApplicationResource, status_code: int = 200) -> Response:
    """``resource`` as the JSON answer, serialised once. The route names the same model as
    its ``response_model`` (the contract is unchanged); FastAPI would validate again what
    the service just built, then serialise it."""
    return Response(
        resource.model_dump_json(by_alias=True),
        status_code=status_code,
        media_type="application/json",
    )


@router.post(
    "/applications",
    status_code=201,
    response_model=ApplicationResource,
    summary="Submit a 一证办电 application with one credential",
    responses={**REPLAYED, **PROBLEMS},
)
async def submit_application(
    body: ApplicationRequest,
    client: WriteClient,
    container: ContainerDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    submitted = await container.applications.submit(
        body, client=client.name, idempotency_key=idempotency_key
    )
    response = json_answer(submitted.application, status_code=201)
    response.headers["Location"] = f"/api/v1/applications/{submitted.application.id}"
    answered_again(response, submitted.created)
    return response


@router.get(
    "/applications",
    summary="Find applications: by case number, status, deadline state, credential, date",
    responses=PROBLEMS,
)
async def list_applications(
    client: ReadClient,
    container: ContainerDep,
    case_no: Annotated[str | None, Query(max_length=64, description="办件编号")] = None,
    status: ApplicationStatus | None = None,
    deadline_state: Annotated[
        DeadlineState | None, Query(description="as of the deadline job's last round")
    ] = None,
    credential: Annotated[
        str | None, Query(max_length=32, description="统一社会信用代码 or 居民身份证号")
    ] = None,
    created_from: Annotated[IsoDateTime | None, Query(description="created at or after")] = None,
    created_to: Annotated[IsoDateTime | None, Query(description="created before")] = None,
    cursor: Annotated[str | None, Query(max_length=400, description="next_cursor")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> ApplicationPage:
    for name, moment in (("created_from", created_from), ("created_to", created_to)):
        if moment is not None and moment.tzinfo is None:
            raise InvalidInput(name, "needs a time zone, e.g. +08:00")
    filters = ApplicationFilter(
        case_no=case_no,
        status=status,
        deadline_state=deadline_state,
        credential_no=credential.strip().upper() if credential else None,
        created_from=created_from,
        created_to=created_to,
    )
    return await container.applications.search(filters, client=client, cursor=cursor, limit=limit)


@router.get(
    "/applications/{application_id}",
    response_model=ApplicationResource,
    summary="An application and its dossier",
    responses=PROBLEMS,
)
async def get_application(
    application_id: ApplicationId, client: ReadClient, container: ContainerDep
) -> Response:
    application = await container.applications.get(application_id, client)
    applicant = application.applicant
    response = json_answer(application)
    await record_read(
        container.exchanges,
        client.name,
        "GET application",
        application_id,
        bytes(response.body),
        person(applicant.credential_type.value, applicant.credential_no),
    )
    return response


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
    return await _evidence(container, EvidenceKind.LICENCE, uscc, _client.name)


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
    return await _evidence(container, EvidenceKind.PROJECT, project_code, _client.name)


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
