"""Reports: the World Bank "Getting Electricity" figures of a period."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query

from gateway.api.deps import ContainerDep, OpsClient
from gateway.api.problems import problem_responses
from gateway.reports import GettingElectricityReport

router = APIRouter(prefix="/api/v1/reports", tags=["reports"])


@router.get(
    "/getting-electricity",
    summary="Procedures, days, documents asked and more, per customer class, for a period",
    responses=problem_responses(401, 422),
)
async def getting_electricity(
    _client: OpsClient,
    container: ContainerDep,
    period_from: Annotated[
        date, Query(alias="from", description="first day customers applied (CST), YYYY-MM-DD")
    ],
    period_to: Annotated[
        date, Query(alias="to", description="last day customers applied (CST), YYYY-MM-DD")
    ],
) -> GettingElectricityReport:
    return await container.reports.getting_electricity(period_from, period_to)
