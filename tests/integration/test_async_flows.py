"""Asynchronous flows through Kafka: signed callbacks, permits, cases, pushes, dead letters."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from adapters.permit.mapping import callback_from_decision
from adapters.signing import sign_request
from adapters.ywtb.mapping import callback_body
from gateway.bootstrap import Container
from gateway.dlq import read_dead_letters
from gateway.settings import Settings
from gateway.store.models import Application, Case, OutboxRow, ReceivedCallback
from schemas.cases import InboundCase
from schemas.events import CaseEvent, PermitEvent
from schemas.permits import PermitDecision, PermitOutcome
from tests.integration.conftest import Platform
from tests.integration.test_applications import JINGAN, body, count
from tests.running import eventually, running, settings_env, worker_process

WORKS = {
    "works_name": "临港储能站35kV电缆接入工程",
    "contractor_name": "上海电力建设有限公司",
    "road": "环湖西二路",
    "section_start": "申港大道",
    "section_end": "云鹃路",
    "excavation_length_m": 320,
    "excavation_area_m2": 480,
    "period_start": "2026-12-10",
    "period_end": "2026-12-20",
}

SM2_PRIVATE = "28183740b9f43d0740e893096bbb477e721962bf35b85c6ef48a197c6ad03376"
SM2_PUBLIC = (
    "041c38e7bb8aca4fb1ca6e0628bc2b73169417c9fdec7dbf49959e7f0345c476fd"
    "ee423bc09feb7a69f609e54fb0670cb4bcdebd7860d874aed126b9fd678c05e2"
)


async def post_signed(
    api: httpx.AsyncClient,
    path: str,
    payload: dict[str, Any],
    *,
    app_id: str,
    secret: str,
    algorithm: str = "hmac-sha256",
    now: float | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[httpx.Response, dict[str, str]]:
    """POST a callback signed as the platform would; returns the response and the headers used."""
    raw = json.dumps(payload, ensure_ascii=False).encode()
    signed = headers or sign_request(
        "POST", path, raw, app_id=app_id, secret=secret, algorithm=algorithm, now=now
    )
    response = await api.post(
        path, content=raw, headers={**signed, "Content-Type": "application/json"}
    )
    return response, signed


def a_case(case_no: str, credential: str = JINGAN) -> InboundCase:
    return InboundCase(
        case_no=case_no,
        item_code="310100-GDYD-001",
        credential_type="uscc",
        credential_no=credential,
        applicant_name="上海静安悦享餐饮管理有限公司",
        district_code="310106",
        site_address="上海市静安区南京西路1266号",
        business_type="new_connection",
        voltage_level="0.4kV",
        capacity_kva=100,
        filed_at=datetime(2026, 11, 26, 10, 0, tzinfo=UTC),
    )


async def file_case(
    platforms: dict[str, Platform], settings: Settings, api_port: int, case: InboundCase
) -> None:
    """A customer files ``case`` on 一网通办; the platform calls the connector back, signed."""
    response = await platforms["ywtb"].admin(
        "POST",
        "file-case",
        {
            **case.model_dump(mode="json"),
            "callback_url": f"http://127.0.0.1:{api_port}/callbacks/ywtb/cases",
            "callback_app_id": settings.ywtb.callback_app_id,
            "callback_secret": settings.ywtb.callback_key.get_secret_value(),
        },
    )
    assert response.json()["delivered"] is True, response.json()


async def application_of(connector: Container, case_no: str) -> str:
    async with connector.sessions() as session:
        application_id = await session.scalar(
            select(Case.application_id).where(Case.case_no == case_no)
        )
    assert application_id is not None
    return application_id


async def pushes(platforms: dict[str, Platform]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = (await platforms["ywtb"].admin("GET", "pushes")).json()["pushes"]
    return result


async def outbox_types(connector: Container) -> list[str]:
    async with connector.sessions() as session:
        return list((await session.scalars(select(OutboxRow.type).order_by(OutboxRow.seq))).all())


async def filed_permit(
    api: httpx.AsyncClient, connector: Container, platforms: dict[str, Platform]
) -> dict[str, Any]:
    """A ready 35 kV application with a permit filed; the authority holds its decision back."""
    await platforms["permit"].admin("PUT", "policy", {"policy": "approve", "decision_delay_s": 600})
    application = (await api.post("/api/v1/applications", json=body())).json()
    permit = (
        await api.post(f"/api/v1/applications/{application['id']}/permits", json=WORKS)
    ).json()

    async def filed() -> bool:
        return bool((await api.get(f"/api/v1/permits/{permit['id']}")).json()["status"] == "filed")

    async with running(connector, "permits"):
        await eventually(filed)
    result: dict[str, Any] = (await api.get(f"/api/v1/permits/{permit['id']}")).json()
    return result


def decision_for(permit: dict[str, Any]) -> dict[str, str]:
    return callback_from_decision(
        PermitDecision(
            filing_no=permit["filing_no"],
            outcome=PermitOutcome.APPROVED,
            permit_no="沪路政掘〔2026〕000123号",
            valid_from=date(2026, 12, 10),
            valid_to=date(2026, 12, 20),
            decided_at=datetime.now(UTC),
        ),
        permit["application_id"],
    )


async def test_bad_callbacks_are_refused_and_change_nothing(
    api: httpx.AsyncClient,
    connector: Container,
    platforms: dict[str, Platform],
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    permit = await filed_permit(api, connector, platforms)
    decision = decision_for(permit)
    secret = settings.permit.callback_key.get_secret_value()
    authority = settings.permit.callback_app_id
    path = "/callbacks/permits"
    caplog.set_level(logging.INFO, logger="ywtb.audit")

    refusals = {
        "bad_signature": await post_signed(api, path, decision, app_id=authority, secret="forged"),
        "stale_timestamp": await post_signed(
            api, path, decision, app_id=authority, secret=secret, now=time.time() - 3600
        ),
        "unknown_app": await post_signed(api, path, decision, app_id="someone-else", secret=secret),
    }
    accepted, used_headers = await post_signed(api, path, decision, app_id=authority, secret=secret)
    refusals["replayed_nonce"] = await post_signed(
        api, path, decision, app_id=authority, secret=secret, headers=used_headers
    )

    for reason, (response, _) in refusals.items():
        assert response.status_code == 401, (reason, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == f"/problems/{reason}"
    audited = [r for r in caplog.records if r.name == "ywtb.audit" and r.msg == "callback refused"]
    assert sorted(r.reason for r in audited) == sorted(refusals)  # type: ignore[attr-defined]
    assert accepted.status_code == 200 and accepted.json()["code"] == "0000"

    again = [
        (await post_signed(api, path, decision, app_id=authority, secret=secret))[0]
        for _ in range(2)
    ]
    assert [r.status_code for r in again] == [200, 200], "a repeated callback is acknowledged"

    current = (await api.get(f"/api/v1/permits/{permit['id']}")).json()
    assert current["status"] == "approved"
    assert current["permit_no"] == "沪路政掘〔2026〕000123号"
    assert (await outbox_types(connector)).count(PermitEvent.DECIDED) == 1, "applied once"
    assert await count(connector, ReceivedCallback) == 1


async def test_a_callback_signed_with_sm2_is_verified_with_the_platforms_public_key(
    settings: Settings, platforms: dict[str, Platform], api: httpx.AsyncClient, connector: Container
) -> None:
    verifier = connector  # the API under test reads the same settings object
    settings.ywtb.callback_algorithm = "sm2-sm3"
    settings.ywtb.callback_key = SecretStr(SM2_PUBLIC)
    path = "/callbacks/ywtb/cases"
    payload = callback_body(a_case("SH-SM2-0001"))

    forged, _ = await post_signed(
        api, path, payload, app_id=settings.ywtb.callback_app_id, secret="ywtb-callback-secret"
    )
    signed, _ = await post_signed(
        api,
        path,
        payload,
        app_id=settings.ywtb.callback_app_id,
        secret=SM2_PRIVATE,
        algorithm="sm2-sm3",
    )

    assert forged.status_code == 401, "an HMAC signature is not accepted where SM2 is configured"
    assert signed.status_code == 200, signed.text
    assert await application_of(verifier, "SH-SM2-0001") == signed.json()["application_id"]


async def test_a_case_filed_twice_creates_one_application(
    api: httpx.AsyncClient,
    connector: Container,
    platforms: dict[str, Platform],
    settings: Settings,
    api_port: int,
) -> None:
    case = a_case("SH2026112600042")
    await file_case(platforms, settings, api_port, case)
    await file_case(platforms, settings, api_port, case)

    application_id = await application_of(connector, case.case_no)
    application = (await api.get(f"/api/v1/applications/{application_id}")).json()
    assert application["status"] == "ready"
    assert application["applicant"]["credential_no"] == JINGAN
    assert await count(connector, Application) == 1
    assert await count(connector, Case) == 1
    assert await count(connector, ReceivedCallback) == 1
    assert (await outbox_types(connector)).count(CaseEvent.RECEIVED) == 1


async def _report(api: httpx.AsyncClient, application_id: str, *stages: str) -> list[str]:
    """Report stages; return their event ids."""
    ids = []
    for stage in stages:
        extra = {"result_code": "01"} if stage == "completed" else {}
        response = await api.post(
            f"/api/v1/applications/{application_id}/progress",
            json={"stage": stage, "handler": "静安供电服务中心 王工", **extra},
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["event_id"])
    return ids


async def test_status_pushes_wait_while_ywtb_is_down_then_arrive_once_in_order(
    api: httpx.AsyncClient,
    connector: Container,
    platforms: dict[str, Platform],
    settings: Settings,
    api_port: int,
) -> None:
    case = a_case("SH2026112600100")
    await file_case(platforms, settings, api_port, case)
    application_id = await application_of(connector, case.case_no)
    platforms["ywtb"].control.faults.down = True

    event_ids = await _report(
        api, application_id, "accepted", "metering_and_connection", "completed"
    )
    async with running(connector, "ywtb-status"):

        async def tried_repeatedly() -> bool:
            return len(platforms["ywtb"].control.received) >= 4

        await eventually(tried_repeatedly)
        assert await pushes(platforms) == []
        platforms["ywtb"].control.faults.down = False

        async def all_pushed() -> bool:
            return len(await pushes(platforms)) >= 3

        # The breaker may have opened just before ywtb came back: it lets a trial
        # through after its reset timeout (30 s), so allow for that.
        await eventually(all_pushed, timeout_s=60)
        await asyncio.sleep(1)  # anything sent twice would show now

    arrived = await pushes(platforms)
    assert [(p["BJBH"], p["XH"], p["ZTDM"]) for p in arrived] == [
        (case.case_no, 1, "01"),
        (case.case_no, 2, "03"),
        (case.case_no, 3, "04"),
    ]
    assert [p["SJID"] for p in arrived] == event_ids


async def dlq_replay(settings: Settings, *event_ids: str) -> list[str]:
    """``ywtb dlq replay EVENT_ID ...`` as ops run it; the event ids it replayed."""
    replay = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway.cli", "dlq", "replay", *event_ids],
        env={**os.environ, **settings_env(settings)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert replay.returncode == 0, replay.stderr
    replayed = [json.loads(line) for line in replay.stdout.splitlines()]
    assert all(r["outcome"] == "sent" for r in replayed), replayed
    return [r["event_id"] for r in replayed]


async def test_a_push_rejected_for_good_is_dead_lettered_and_replayed_after_the_fix(
    api: httpx.AsyncClient,
    connector: Container,
    platforms: dict[str, Platform],
    settings: Settings,
    api_port: int,
) -> None:
    """The 办结 is replayed first, while the stage before it is still dead: 一网通办 takes
    stages only in sequence, so the connector pushes the missing one first, from the store."""
    case = a_case("SH2026112600200")
    await file_case(platforms, settings, api_port, case)
    application_id = await application_of(connector, case.case_no)

    async def timeline_states() -> dict[str, str]:
        items = (await api.get(f"/api/v1/applications/{application_id}/events")).json()
        return {
            i["event_id"]: d["status"]
            for i in items
            for d in i["deliveries"]
            if d["worker"] == "ywtb-status"
        }

    async def states_are(expected: dict[str, str]) -> bool:
        states = await timeline_states()
        return all(states.get(e) == status for e, status in expected.items())

    async with running(connector, "ywtb-status", "timeline"):
        [accepted] = await _report(api, application_id, "accepted")
        await eventually(lambda: states_are({accepted: "delivered"}))
        await platforms["ywtb"].admin("PUT", "reject", [case.case_no])  # 办件不存在, for now
        metering, completed = await _report(
            api, application_id, "metering_and_connection", "completed"
        )
        await eventually(lambda: states_are({metering: "dead", completed: "dead"}))
        letters = await read_dead_letters(settings.kafka)
        dead = {d.event_id: d for d in letters if d.worker == "ywtb-status"}
        assert set(dead) == {metering, completed}
        assert "PlatformRejected" in dead[completed].header("ywtb_error")
        assert dead[completed].header("ce_type").endswith("application.stage_changed")
        assert [p["SJID"] for p in await pushes(platforms)] == [accepted]

        await platforms["ywtb"].admin("DELETE", "reject")
        assert await dlq_replay(settings, completed) == [completed]
        await eventually(lambda: states_are({metering: "delivered", completed: "delivered"}))
        in_order = [(p["XH"], p["ZTDM"], p["SJID"]) for p in await pushes(platforms)]
        assert in_order == [(1, "01", accepted), (2, "03", metering), (3, "04", completed)]

        # The stage pushed along the way is replayed too: the platform has it, nothing changes.
        calls = platforms["ywtb"].control.calls["PushCaseStatus"]
        assert await dlq_replay(settings, metering) == [metering]

        async def replay_answered() -> bool:
            return platforms["ywtb"].control.calls["PushCaseStatus"] > calls

        await eventually(replay_answered)
        await eventually(lambda: states_are({metering: "delivered"}))
        await asyncio.sleep(1)  # anything sent twice would show now

    arrived = await pushes(platforms)
    assert [(p["XH"], p["ZTDM"], p["SJID"]) for p in arrived] == in_order
    assert await timeline_states() == {
        accepted: "delivered",
        metering: "delivered",
        completed: "delivered",
    }


async def _all_delivered(states: Any, event_ids: list[str]) -> bool:
    current = await states()
    return all(current.get(e) == "delivered" for e in event_ids)


async def test_killing_the_marketing_worker_mid_burst_of_200_callbacks_loses_none(
    api: httpx.AsyncClient,
    connector: Container,
    platforms: dict[str, Platform],
    settings: Settings,
    tmp_path: Path,
) -> None:
    total = 200
    log = tmp_path / "marketing-worker.log"
    limit = asyncio.Semaphore(8)

    async def callback(n: int) -> int:
        async with limit:
            response, _ = await post_signed(
                api,
                "/callbacks/ywtb/cases",
                callback_body(a_case(f"SH-BURST-{n:04d}")),
                app_id=settings.ywtb.callback_app_id,
                secret=settings.ywtb.callback_key.get_secret_value(),
            )
            return response.status_code

    async def notices() -> dict[str, Any]:
        result: dict[str, Any] = (await platforms["marketing"].admin("GET", "notices")).json()
        return result

    async def applied_at_least(n: int) -> bool:
        return len((await notices())["notices"]) >= n

    worker = worker_process("marketing", settings, log)
    try:
        async with running(connector):
            burst = asyncio.gather(*(callback(n) for n in range(total)))
            await eventually(lambda: applied_at_least(20), timeout_s=90)
            worker.send_signal(signal.SIGKILL)
            await asyncio.to_thread(worker.wait, 10)
            statuses = await burst
            assert statuses == [200] * total
            at_kill = len((await notices())["notices"])
            assert at_kill < total, "the worker was not killed mid-burst: the test proved nothing"

            worker = worker_process("marketing", settings, log)
            await eventually(lambda: applied_at_least(total), timeout_s=120)
            await asyncio.sleep(1)  # a late duplicate would show now
    finally:
        worker.send_signal(signal.SIGTERM)
        await asyncio.to_thread(worker.wait, 20)

    record = await notices()
    applied = record["notices"]
    async with connector.sessions() as session:
        application_ids = set((await session.scalars(select(Case.application_id))).all())
    assert len(applied) == total, "each case reached the marketing system once"
    assert {n["SQBH"] for n in applied} == application_ids
    assert {n["TZLX"] for n in applied} == {"case_received"}
    assert len(record["counts"]) == total
    redelivered = sum(c - 1 for c in record["counts"].values())
    assert redelivered <= 8, "only messages in flight at the kill may be delivered again"
