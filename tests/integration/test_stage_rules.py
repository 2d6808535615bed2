"""Stage reports follow the application's procedures; permits and progress take an
``Idempotency-Key`` as applications do. A refusal stores nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select

from gateway.bootstrap import Container
from gateway.store.models import OutboxRow, Permit, StageChange
from schemas.events import ApplicationEvent, PermitEvent
from tests.integration.test_applications import JINGAN, LINGANG, body, low_voltage
from tests.integration.test_async_flows import WORKS

HANDLER = "静安供电服务中心 王工"


async def stored(connector: Container, application_id: str) -> tuple[list[str], int]:
    """The stages recorded for the application, and how many stage events are in the outbox."""
    async with connector.sessions() as session:
        stages = (
            await session.scalars(
                select(StageChange.stage)
                .where(StageChange.application_id == application_id)
                .order_by(StageChange.seq)
            )
        ).all()
        events = await session.scalar(
            select(func.count()).where(
                OutboxRow.type == ApplicationEvent.STAGE_CHANGED, OutboxRow.key == application_id
            )
        )
    return list(stages), int(events or 0)


async def report(
    api: httpx.AsyncClient, application_id: str, stage: str, **extra: Any
) -> httpx.Response:
    return await api.post(
        f"/api/v1/applications/{application_id}/progress",
        json={"stage": stage, "handler": HANDLER, **extra},
    )


async def refused(
    api: httpx.AsyncClient,
    connector: Container,
    application_id: str,
    status: int,
    stage: str,
    **extra: Any,
) -> dict[str, Any]:
    """Report a stage that must be refused with ``status``; check nothing was stored."""
    before = await stored(connector, application_id)
    response = await report(api, application_id, stage, **extra)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert await stored(connector, application_id) == before, "a refusal stores nothing"
    problem: dict[str, Any] = response.json()
    return problem


async def test_stages_follow_the_procedures_of_a_low_voltage_application(
    api: httpx.AsyncClient, connector: Container
) -> None:
    application = (await api.post("/api/v1/applications", json=low_voltage(JINGAN))).json()
    assert [p["code"] for p in application["procedures"]] == [
        "acceptance",
        "metering_and_connection",
    ]
    app_id = application["id"]

    first = await refused(api, connector, app_id, 409, "metering_and_connection")
    assert (first["type"], first["current_stage"]) == ("/problems/stage_out_of_order", None)
    assert first["expected"] == ["accepted", "supplement_requested", "refused"]
    assert (await report(api, app_id, "accepted")).status_code == 201

    no_works = await refused(api, connector, app_id, 422, "external_works")
    assert no_works["errors"][0]["field"] == "stage"
    assert "external_works" in no_works["errors"][0]["reason"]
    await refused(api, connector, app_id, 422, "survey_and_plan")
    early = await refused(api, connector, app_id, 409, "completed", result_code="01")
    assert early["current_stage"] == "accepted"
    again = await refused(api, connector, app_id, 409, "accepted")
    assert again["current_stage"] == "accepted", "a stage is not reported twice"

    no_reason = await refused(api, connector, app_id, 422, "supplement_requested")
    assert no_reason["errors"][0]["field"] == "reason"
    await refused(api, connector, app_id, 422, "supplement_requested", reason="  ")
    for missing in ("营业执照副本不清晰", "用电地址证明缺失"):
        supplement = await report(api, app_id, "supplement_requested", reason=missing)
        assert supplement.status_code == 201, supplement.text
    assert (await report(api, app_id, "metering_and_connection")).status_code == 201
    backwards = await refused(api, connector, app_id, 409, "accepted")
    assert backwards["current_stage"] == "metering_and_connection"
    assert (await report(api, app_id, "completed", result_code="01")).status_code == 201

    after = await refused(api, connector, app_id, 409, "accepted")
    assert after["current_stage"] == "completed"
    assert after["expected"] == []
    assert "completed" in after["detail"]
    await refused(api, connector, app_id, 409, "supplement_requested", reason="补充材料")
    await refused(api, connector, app_id, 409, "refused", reason="不符合条件")

    assert await stored(connector, app_id) == (
        [
            "accepted",
            "supplement_requested",
            "supplement_requested",
            "metering_and_connection",
            "completed",
        ],
        5,
    )


async def test_nothing_follows_a_refusal(api: httpx.AsyncClient, connector: Container) -> None:
    app_id = (await api.post("/api/v1/applications", json=low_voltage(JINGAN))).json()["id"]
    assert (await report(api, app_id, "accepted")).status_code == 201
    await refused(api, connector, app_id, 422, "refused")  # needs a reason
    assert (await report(api, app_id, "refused", reason="用电地址不在供电范围")).status_code == 201

    for stage in ("metering_and_connection", "accepted"):
        problem = await refused(api, connector, app_id, 409, stage)
        assert problem["current_stage"] == "refused"
    await refused(api, connector, app_id, 409, "completed", result_code="02")
    assert await stored(connector, app_id) == (["accepted", "refused"], 2)


async def test_a_high_voltage_connection_goes_through_its_four_procedures(
    api: httpx.AsyncClient, connector: Container
) -> None:
    app_id = (await api.post("/api/v1/applications", json=body(LINGANG))).json()["id"]
    assert (await report(api, app_id, "accepted")).status_code == 201
    skipped = await refused(api, connector, app_id, 409, "external_works")
    assert skipped["current_stage"] == "accepted"
    assert skipped["expected"][0] == "survey_and_plan"
    for stage in ("survey_and_plan", "external_works", "metering_and_connection"):
        assert (await report(api, app_id, stage)).status_code == 201
    assert (await report(api, app_id, "completed")).status_code == 201
    assert (await stored(connector, app_id))[0][-1] == "completed"


async def test_occurred_at_is_neither_in_the_future_nor_before_the_application(
    api: httpx.AsyncClient, connector: Container
) -> None:
    application = (await api.post("/api/v1/applications", json=low_voltage(JINGAN))).json()
    app_id = application["id"]
    received = datetime.fromisoformat(application["created_at"])
    future = datetime.now(UTC) + timedelta(hours=1)
    before = received - timedelta(days=1)

    for moment in (future, before):
        problem = await refused(
            api, connector, app_id, 422, "accepted", occurred_at=moment.isoformat()
        )
        assert problem["errors"][0]["field"] == "occurred_at"
    skewed = datetime.now(UTC) + timedelta(seconds=30)  # within the allowed clock skew
    accepted = await report(api, app_id, "accepted", occurred_at=skewed.isoformat())
    assert accepted.status_code == 201, accepted.text
    assert await stored(connector, app_id) == (["accepted"], 1)


async def test_a_progress_report_retried_with_its_key_is_recorded_once(
    api: httpx.AsyncClient, connector: Container
) -> None:
    app_id = (await api.post("/api/v1/applications", json=low_voltage(JINGAN))).json()["id"]
    path = f"/api/v1/applications/{app_id}/progress"
    accepted = {"stage": "accepted", "handler": HANDLER}

    first = await api.post(path, json=accepted, headers={"Idempotency-Key": "progress-1"})
    retry = await api.post(path, json=accepted, headers={"Idempotency-Key": "progress-1"})
    other = await api.post(
        path,
        json={**accepted, "handler": "someone else"},
        headers={"Idempotency-Key": "progress-1"},
    )

    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    assert retry.status_code == 200 and retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json() == first.json()
    assert other.status_code == 422
    assert other.json()["errors"][0]["field"] == "Idempotency-Key"
    assert await stored(connector, app_id) == (["accepted"], 1)

    metering = {"stage": "metering_and_connection", "handler": HANDLER}
    racing = await asyncio.gather(
        *(
            api.post(path, json=metering, headers={"Idempotency-Key": "progress-2"})
            for _ in range(6)
        )
    )
    assert sorted(r.status_code for r in racing) == [200] * 5 + [201]
    assert len({r.json()["event_id"] for r in racing}) == 1
    assert await stored(connector, app_id) == (["accepted", "metering_and_connection"], 2)


async def test_a_permit_request_retried_with_its_key_files_one_permit(
    api: httpx.AsyncClient, connector: Container
) -> None:
    app_id = (await api.post("/api/v1/applications", json=body(LINGANG))).json()["id"]
    path = f"/api/v1/applications/{app_id}/permits"

    first = await api.post(path, json=WORKS, headers={"Idempotency-Key": "permit-1"})
    retry = await api.post(path, json=WORKS, headers={"Idempotency-Key": "permit-1"})
    longer = await api.post(
        path, json={**WORKS, "excavation_length_m": 400}, headers={"Idempotency-Key": "permit-1"}
    )
    elsewhere = await api.post(
        f"/api/v1/applications/{app_id}/progress",
        json={"stage": "accepted", "handler": HANDLER},
        headers={"Idempotency-Key": "permit-1"},
    )

    assert first.status_code == 201, first.text
    assert first.headers["Location"] == f"/api/v1/permits/{first.json()['id']}"
    assert retry.status_code == 200 and retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json() == first.json()
    assert [longer.status_code, elsewhere.status_code] == [422, 422]
    assert await stored(connector, app_id) == ([], 0), "the key of a permit is not a stage's"

    racing = await asyncio.gather(
        *(api.post(path, json=WORKS, headers={"Idempotency-Key": "permit-2"}) for _ in range(6))
    )
    assert sorted(r.status_code for r in racing) == [200] * 5 + [201]
    assert len({r.json()["id"] for r in racing}) == 1
    async with connector.sessions() as session:
        permits = await session.scalar(select(func.count()).select_from(Permit))
        requested = await session.scalar(
            select(func.count()).where(OutboxRow.type == PermitEvent.REQUESTED)
        )
    assert (permits, requested) == (2, 2), "one permit and one event per key"
