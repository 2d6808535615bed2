"""Ops API: dead letters, listed with filters and replayed (dry run first).

Every route authenticates through ``ops_reader`` or ``ops_replayer``: the scope
checks (``ops:read``, ``ops:replay``) belong there, one dependency each.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.deps import ContainerDep, OpsClient, ReplayClient
from gateway.api.problems import problem_responses
from gateway.dlq import DeadLetterFilter, DeadLetters
from schemas.text import IsoDateTime, optional_text, text

router = APIRouter(prefix="/api/v1/ops", tags=["ops"])


async def ops_reader(client: OpsClient) -> str:
    """The calling client, allowed to read ops data (scope ``ops:read``)."""
    return client.name


async def ops_replayer(client: ReplayClient) -> str:
    """The calling client, allowed to replay dead letters (scope ``ops:replay``)."""
    return client.name


OpsReader = Annotated[str, Depends(ops_reader)]
OpsReplayer = Annotated[str, Depends(ops_replayer)]


def dead_letters(container: ContainerDep) -> DeadLetters:
    return container.dead_letters


DeadLettersDep = Annotated[DeadLetters, Depends(dead_letters)]


class ReplayRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    event_ids: list[Annotated[str, text(64)]] = Field(
        min_length=1, description="the CloudEvent ids (ce_id) of the dead letters to replay"
    )
    dry_run: bool = Field(True, description="only say what would be sent where")
    worker: str | None = optional_text(100, description="only the dead letters of this worker")


def letter_filter(
    topic: Annotated[str | None, Query(description="original topic, or its .dlq")] = None,
    worker: Annotated[str | None, Query(description="the worker that gave up")] = None,
    error: Annotated[str | None, Query(description="text in the error (any case)")] = None,
    since: Annotated[IsoDateTime | None, Query(description="died at or after (ISO 8601)")] = None,
    until: Annotated[IsoDateTime | None, Query(description="died before (ISO 8601)")] = None,
    application_id: Annotated[str | None, Query(description="the application (key)")] = None,
    include_resolved: Annotated[
        bool, Query(description="also letters applied or replayed since they died")
    ] = False,
) -> DeadLetterFilter:
    return DeadLetterFilter(
        topic=topic or None,
        worker=worker or None,
        error=error or None,
        since=since,
        until=until,
        application_id=application_id or None,
        include_resolved=include_resolved,
    )


@router.get(
    "/dead-letters",
    summary="Dead letters still dead (or all, with include_resolved), newest first",
    responses=problem_responses(401, 422, 503),
)
async def list_dead_letters(
    _client: OpsReader,
    service: DeadLettersDep,
    filters: Annotated[DeadLetterFilter, Depends(letter_filter)],
) -> dict[str, Any]:
    items = [d.summary() for d in await service.find(filters)]
    return {"items": items, "count": len(items)}


@router.get(
    # Only a UUID matches, so ``/dead-letters/replay`` is not read as an event id.
    "/dead-letters/{event_id:uuid}",
    summary="One dead letter: headers, payload and attempt history",
    responses=problem_responses(401, 404, 503),
)
async def show_dead_letter(
    event_id: UUID,
    _client: OpsReader,
    service: DeadLettersDep,
    worker: Annotated[str | None, Query(description="the worker, if several gave up")] = None,
) -> dict[str, Any]:
    return (await service.get(str(event_id), worker)).details()


@router.post(
    "/dead-letters/replay",
    summary="Replay dead letters to their workers (a dry run says what would be sent where)",
    responses=problem_responses(401, 422, 503),
)
async def replay_dead_letters(
    body: ReplayRequest, client: OpsReplayer, service: DeadLettersDep
) -> dict[str, Any]:
    report = await service.replay(
        body.event_ids, dry_run=body.dry_run, actor=client, worker=body.worker
    )
    return report.as_dict()


@router.get(
    "/replays",
    summary="The latest replay requests: who, when, dry run or not, outcomes",
    responses=problem_responses(401),
)
async def replay_history(
    _client: OpsReader,
    service: DeadLettersDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    return {"items": await service.history(limit)}
