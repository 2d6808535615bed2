"""The customer's clock end to end: back-dated cases, the deadline job, lookup and the report."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from gateway.bootstrap import Container, bootstrap
from gateway.bus import record_to_event
from gateway.deadlines import deadline_job
from gateway.settings import Settings
from gateway.store.db import transaction
from gateway.store.models import DeadlineAlert, OutboxRow, Permit, utcnow
from gateway.supervise import Loops, supervise
from schemas.chinatime import CHINA_STANDARD_TIME, format_platform_time
from schemas.events import APPLICATION_EVENTS, ApplicationEvent
from tests.integration.conftest import Platform
from tests.integration.test_applications import JINGAN, body, low_voltage
from tests.integration.test_async_flows import a_case, application_of, file_case, pushes
from tests.kafka import read_topic
from tests.running import eventually, running, settings_env

MINHANG = "91310112MA1KD7015F"  # active, 10kV without a project code


def ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).isoformat()


async def apply(api: httpx.AsyncClient, payload: dict[str, Any], received_at: str) -> str:
    response = await api.post("/api/v1/applications", json={**payload, "received_at": received_at})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def report(api: httpx.AsyncClient, application_id: str, stage: str, at: str) -> None:
    extra: dict[str, Any] = {"result_code": "01"} if stage == "completed" else {}
    if stage == "supplement_requested":
        extra = {"reason": "缺少房屋产权证明"}
    response = await api.post(
        f"/api/v1/applications/{application_id}/progress",
        json={"stage": stage, "handler": "静安供电服务中心", "occurred_at": at, **extra},
    )
    assert response.status_code == 201, response.text


async def test_back_dated_cases_are_overdue_on_track_or_met_and_found_by_case_number(
    api: httpx.AsyncClient,
    connector: Container,
    platforms: dict[str, Platform],
    settings: Settings,
    api_port: int,
) -> None:
    filed_at = datetime.now(CHINA_STANDARD_TIME) - timedelta(days=40)
    answer = (
        await platforms["ywtb"].admin(
            "POST",
            "file-case",
            {
                "case_no": "SH-CLOCK-0040",
                "item_code": "310100-GDYD-001",
                "credential_type": "uscc",
                "credential_no": JINGAN,
                "applicant_name": "上海静安悦享餐饮管理有限公司",
                "district_code": "310106",
                "site_address": "上海市静安区南京西路1266号",
                "business_type": "new_connection",
                "voltage_level": "0.4kV",
                "capacity_kva": 100,
                "filed_at": filed_at.isoformat(),
                "callback_url": f"http://127.0.0.1:{api_port}/callbacks/ywtb/cases",
                "callback_app_id": settings.ywtb.callback_app_id,
                "callback_secret": settings.ywtb.callback_key.get_secret_value(),
            },
        )
    ).json()
    assert answer["delivered"] is True
    old_case = answer["application_id"]  # the id our acknowledgement named

    found = (await api.get("/api/v1/applications", params={"case_no": "SH-CLOCK-0040"})).json()
    assert [item["id"] for item in found["items"]] == [old_case]
    assert found["next_cursor"] is None
    overdue = found["items"][0]
    assert overdue["case_no"] == "SH-CLOCK-0040"
    assert overdue["deadline"]["state"] == "overdue"
    assert overdue["deadline"]["limit_days"] == 10 and overdue["deadline"]["day_kind"] == "working"
    assert overdue["deadline"]["remaining_days"] < 0
    started = datetime.fromisoformat(overdue["deadline"]["started_at"])
    assert abs(started - filed_at) < timedelta(seconds=1)  # 申报时间 has whole seconds
    assert (await api.get("/api/v1/applications", params={"case_no": "SH-NONE"})).json() == {
        "items": [],
        "next_cursor": None,
    }

    yesterday = await apply(api, low_voltage(JINGAN), ago(days=1))
    fresh = (await api.get(f"/api/v1/applications/{yesterday}")).json()["deadline"]
    assert fresh["state"] == "on_track"
    due_at = datetime.fromisoformat(fresh["due_at"])
    assert datetime.now(UTC) + timedelta(days=1) < due_at < datetime.now(UTC) + timedelta(days=25)
    assert 0 <= fresh["elapsed_days"] <= 1.01 and fresh["remaining_days"] == pytest.approx(
        10 - fresh["elapsed_days"], abs=0.01
    )

    done = await apply(api, low_voltage(JINGAN), ago(days=6))
    await report(api, done, "accepted", ago(days=5, hours=23))
    await report(api, done, "metering_and_connection", ago(days=3))
    await report(api, done, "completed", ago(days=2))
    met = (await api.get(f"/api/v1/applications/{done}")).json()["deadline"]
    assert met["state"] == "met" and met["stopped_by"] == "completed"
    assert [(s["procedure"], s["state"]) for s in met["stages"]] == [
        ("acceptance", "met"),
        ("metering_and_connection", "met"),
    ]

    # The list filters on the state the store keeps (recorded on creation and stage reports).
    listed = (await api.get("/api/v1/applications", params={"deadline_state": "met"})).json()
    assert [item["id"] for item in listed["items"]] == [done]
    first = (await api.get("/api/v1/applications", params={"limit": 2})).json()
    rest = (
        await api.get("/api/v1/applications", params={"limit": 2, "cursor": first["next_cursor"]})
    ).json()
    assert [i["id"] for i in first["items"] + rest["items"]] == [old_case, yesterday, done]
    assert rest["next_cursor"] is None
    bad = await api.get("/api/v1/applications", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "cursor"


async def test_the_status_pushed_to_ywtb_tells_the_promised_limit_and_due_time(
    api: httpx.AsyncClient,
    connector: Container,
    platforms: dict[str, Platform],
    settings: Settings,
    api_port: int,
) -> None:
    case = a_case("SH-CLOCK-0001").model_copy(
        update={"filed_at": datetime.now(UTC) - timedelta(days=1)}
    )
    await file_case(platforms, settings, api_port, case)
    application_id = await application_of(connector, case.case_no)
    await report(api, application_id, "accepted", ago(hours=20))
    clock = (await api.get(f"/api/v1/applications/{application_id}")).json()["deadline"]
    assert clock["state"] == "on_track" and clock["limit_days"] == 10
    due_at = clock["due_at"]
    assert datetime.fromisoformat(due_at) > datetime.now(UTC) + timedelta(days=1)

    async with running(connector, "ywtb-status"):

        async def pushed() -> bool:
            return bool(await pushes(platforms))

        await eventually(pushed)
    [push] = await pushes(platforms)
    assert (push["BJBH"], push["ZTDM"], push["CNSX"], push["SXLX"]) == (
        "SH-CLOCK-0001",
        "01",
        10,
        "2",
    )
    assert push["CNBJSJ"] == format_platform_time(datetime.fromisoformat(due_at), "due_at")


async def test_a_received_at_in_the_future_is_refused(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/api/v1/applications",
        json={**low_voltage(JINGAN), "received_at": ago(days=-1)},
    )
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "received_at"


async def _alerts(container: Container) -> list[tuple[str, str, str, str | None]]:
    async with container.sessions() as session:
        rows = await session.scalars(select(DeadlineAlert).order_by(DeadlineAlert.id))
        return [(a.application_id, a.scope, a.threshold, a.event_id) for a in rows]


async def _overdue_rows(container: Container) -> list[OutboxRow]:
    async with container.sessions() as session:
        return list(
            (
                await session.scalars(
                    select(OutboxRow).where(OutboxRow.type == ApplicationEvent.DEADLINE_OVERDUE)
                )
            ).all()
        )


async def test_exactly_one_overdue_event_per_application_with_two_replicas_and_a_restart(
    api: httpx.AsyncClient,
    connector: Container,
    platforms: dict[str, Platform],
    settings: Settings,
) -> None:
    late = [await apply(api, low_voltage(JINGAN), ago(days=40)) for _ in range(3)]
    fresh = await apply(api, low_voltage(JINGAN), ago(hours=1))

    settings.deadlines.interval_s = 0.1
    replica = await bootstrap(settings)
    stop, loops = asyncio.Event(), Loops()
    jobs = [
        asyncio.create_task(supervise("deadlines-a", deadline_job(connector), stop, loops)),
        asyncio.create_task(supervise("deadlines-b", deadline_job(replica), stop, loops)),
    ]
    try:

        async def all_overdue() -> bool:
            return len(await _overdue_rows(connector)) >= len(late)

        await eventually(all_overdue)
        await asyncio.sleep(1.0)  # several more rounds of both replicas
    finally:
        stop.set()
        await asyncio.gather(*jobs)
        await replica.aclose()
    assert loops.snapshot()["deadlines-a"]["restarts"] == 0
    assert loops.snapshot()["deadlines-b"]["restarts"] == 0

    restarted = await bootstrap(settings)  # a new process: nothing in memory
    try:
        counts = await restarted.deadlines.evaluate()
    finally:
        await restarted.aclose()
    assert counts["deadline_overdue"] == 0 and counts["evaluated"] == 4

    overdue = await _overdue_rows(connector)
    assert sorted(row.key for row in overdue) == sorted(late)
    alerts = await _alerts(connector)
    # The total limit (0.5, 0.8 passed silently, 1.0 announced) and the 1-day acceptance stage.
    for application_id in late:
        mine = sorted((scope, t, e is not None) for a, scope, t, e in alerts if a == application_id)
        assert mine == [
            ("acceptance", "0.5", False),
            ("acceptance", "0.8", False),
            ("acceptance", "1.0", True),
            ("total", "0.5", False),
            ("total", "0.8", False),
            ("total", "1.0", True),
        ]
    assert all(a != fresh for a, *_ in alerts)
    listed = (await api.get("/api/v1/applications", params={"deadline_state": "overdue"})).json()
    assert sorted(i["id"] for i in listed["items"]) == sorted(late)

    async with running(connector, "marketing"):
        records = await read_topic(
            settings.kafka.bootstrap or "", APPLICATION_EVENTS, expect=len(late) * 2
        )

        async def reminded() -> bool:
            notices = (await platforms["marketing"].admin("GET", "notices")).json()["notices"]
            return len([n for n in notices if n["TZLX"] == "deadline_overdue"]) >= len(late)

        await eventually(reminded)
    on_topic = [record_to_event(r) for r in records]
    overdue_on_topic = [e for e in on_topic if e.get_type() == ApplicationEvent.DEADLINE_OVERDUE]
    assert sorted(str(e.get_extension("partitionkey")) for e in overdue_on_topic) == sorted(late)
    data = overdue_on_topic[0].get_data()
    assert data["scope"] == "total" and data["limit_days"] == 10 and data["state"] == "overdue"
    notices = (await platforms["marketing"].admin("GET", "notices")).json()["notices"]
    chased = sorted(n["SQBH"] for n in notices if n["TZLX"] == "deadline_overdue")
    assert chased == sorted(late)


# --- the Getting Electricity report -------------------------------------------------------


def cst(day: int, hour: int, month: int = 3) -> str:
    return datetime(2025, month, day, hour, tzinfo=CHINA_STANDARD_TIME).isoformat()


async def _seed_march_2025(api: httpx.AsyncClient, connector: Container) -> None:
    """A week of March 2025 (no holiday; weekends 8–9 and 15–16), numbers worked out below."""
    # L1: Mon 3rd 09:00 → accepted 15:00 → metering Tue 09:00 → completed Wed 5th 09:00.
    l1 = await apply(api, low_voltage(JINGAN), cst(3, 9))
    await report(api, l1, "accepted", cst(3, 15))
    await report(api, l1, "metering_and_connection", cst(4, 9))
    await report(api, l1, "completed", cst(5, 9))
    # L2: Tue 4th 09:00 → accepted 10:00 → 补正 12:00 … answered Thu 6th 12:00 (metering)
    # → completed Tue 11th 09:00.
    l2 = await apply(api, low_voltage(JINGAN), cst(4, 9))
    await report(api, l2, "accepted", cst(4, 10))
    await report(api, l2, "supplement_requested", cst(4, 12))
    await report(api, l2, "metering_and_connection", cst(6, 12))
    await report(api, l2, "completed", cst(11, 9))
    # L3: Fri 7th, still open. L4: Mon 10th, outside the period.
    await apply(api, low_voltage(JINGAN), cst(7, 9))
    await apply(api, low_voltage(JINGAN), cst(10, 9))
    # H1 (10 kV): Wed 5th 09:00 → accepted 12:00 → survey Thu 09:00 → external works Mon 10th
    # 09:00 → metering Wed 12th 09:00 → completed Thu 13th 09:00; one permit, 4 days to decide.
    h1 = await apply(
        api, body(MINHANG, voltage="10kV", capacity=800, project=None, district="310112"), cst(5, 9)
    )
    await report(api, h1, "accepted", cst(5, 12))
    await report(api, h1, "survey_and_plan", cst(6, 9))
    await report(api, h1, "external_works", cst(10, 9))
    await report(api, h1, "metering_and_connection", cst(12, 9))
    await report(api, h1, "completed", cst(13, 9))
    async with transaction(connector.sessions) as session:
        session.add(
            Permit(
                id="permit-h1",
                application_id=h1,
                status="approved",
                request={},
                filing_no="F-H1",
                filed_at=datetime.fromisoformat(cst(6, 9)),
                decided_at=datetime.fromisoformat(cst(10, 9)),
                created_at=utcnow(),
                updated_at=utcnow(),
            )
        )


# Worked by hand (working days, 24 h each; Saturday and Sunday count nothing):
# L1: Mon 15 h + Tue 24 + Wed 9 = 48 h = 2.0; acceptance 6 h = 0.25; metering 42 h = 1.75.
# L2: Tue 09–12 3 h, paused to Thu 12:00, Thu 12 + Fri 24 + Mon 24 + Tue 9 = 72 h = 3.0;
#     acceptance 1 h = 0.0417; metering Tue 2 h + 12 + 24 + 24 + 9 = 71 h = 2.9583.
# H1: Wed 15 + Thu 24 + Fri 24 + Mon 24 + Tue 24 + Wed 24 + Thu 9 = 144 h = 6.0;
#     acceptance 3 h = 0.125; survey Wed 12 + Thu 24 + Fri 24 + Mon 9 = 69 h = 2.875;
#     external works Mon 15 + Tue 24 + Wed 9 = 48 h = 2.0; metering 24 h = 1.0.
EXPECTED_LOW = {
    "customer_class": "low_voltage",
    "limit_days": 10,
    "day_kind": "working",
    "applications": 3,
    "completed": 2,
    "procedures_per_application": 2.0,
    "documents_per_application": 1.3333,  # (1 + 2 + 1) / 3: L2 was asked once more (补正)
    "days_median": 2.5,
    "days_p90": 3.0,
    "within_limit_share": 1.0,
    "stages": [
        {
            "procedure": "acceptance",
            "limit_days": 1,
            "completed": 2,
            "days_median": 0.1458,  # (0.25 + 0.041667) / 2
            "days_p90": 0.25,
        },
        {
            "procedure": "metering_and_connection",
            "limit_days": None,
            "completed": 2,
            "days_median": 2.3542,  # (1.75 + 2.958333) / 2
            "days_p90": 2.9583,
        },
    ],
    "permits_decided": 0,
    "permit_turnaround_days_median": None,
    "evidence_fetched": 1,  # L1 fetched the licence; L2 and L3 reused it from the store
    "evidence_reused": 2,
}
EXPECTED_10KV = {
    "customer_class": "10kV",
    "limit_days": 60,
    "day_kind": "working",
    "applications": 1,
    "completed": 1,
    "procedures_per_application": 5.0,  # 4 procedures and the excavation permit
    "documents_per_application": 1.0,
    "days_median": 6.0,
    "days_p90": 6.0,
    "within_limit_share": 1.0,
    "stages": [
        {
            "procedure": "acceptance",
            "limit_days": None,
            "completed": 1,
            "days_median": 0.125,
            "days_p90": 0.125,
        },
        {
            "procedure": "survey_and_plan",
            "limit_days": None,
            "completed": 1,
            "days_median": 2.875,
            "days_p90": 2.875,
        },
        {
            "procedure": "external_works",
            "limit_days": 30,
            "completed": 1,
            "days_median": 2.0,
            "days_p90": 2.0,
        },
        {
            "procedure": "metering_and_connection",
            "limit_days": None,
            "completed": 1,
            "days_median": 1.0,
            "days_p90": 1.0,
        },
    ],
    "permits_decided": 1,
    "permit_turnaround_days_median": 4.0,
    "evidence_fetched": 1,
    "evidence_reused": 0,
}


def _without_timing(figures: dict[str, Any]) -> dict[str, Any]:
    """The class figures less the one measured live (seconds to a complete dossier)."""
    return {k: v for k, v in figures.items() if k != "dossier_seconds_median"}


async def test_the_getting_electricity_report_matches_figures_worked_by_hand(
    api: httpx.AsyncClient, connector: Container, settings: Settings, tmp_path: Path
) -> None:
    await _seed_march_2025(api, connector)

    response = await api.get(
        "/api/v1/reports/getting-electricity", params={"from": "2025-03-03", "to": "2025-03-09"}
    )
    assert response.status_code == 200, response.text
    figures = response.json()
    assert (figures["period_from"], figures["period_to"]) == ("2025-03-03", "2025-03-09")
    low, kv10, kv35 = figures["classes"]
    assert _without_timing(low) == EXPECTED_LOW
    assert _without_timing(kv10) == EXPECTED_10KV
    assert 0 <= low["dossier_seconds_median"] < 30 and 0 <= kv10["dossier_seconds_median"] < 30
    assert (kv35["customer_class"], kv35["applications"], kv35["days_median"]) == (
        "35kV_and_above",
        0,
        None,
    )
    backwards = await api.get(
        "/api/v1/reports/getting-electricity", params={"from": "2025-03-09", "to": "2025-03-03"}
    )
    assert backwards.status_code == 422 and backwards.json()["errors"][0]["field"] == "to"

    chart = tmp_path / "report.png"
    env = {k: v for k, v in os.environ.items() if not k.startswith("YWTB_")}
    done = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "report",
            "--from",
            "2025-03-03",
            "--to",
            "2025-03-09",
            "--chart",
            str(chart),
        ],
        env={**env, **settings_env(settings), "YWTB_LOG_LEVEL": "WARNING"},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    printed = json.loads(done.stdout)
    assert [_without_timing(c) for c in printed["classes"][:2]] == [EXPECTED_LOW, EXPECTED_10KV]
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 10_000
