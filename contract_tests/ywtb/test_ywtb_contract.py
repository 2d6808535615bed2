"""The 一网通办 adapter against its simulator over loopback HTTP, both directions.

Status pushes go from ``CaseStatusClient`` to the simulator; filed cases come
from the simulator to a receiver started here, which verifies the signature as
the connector's callback endpoint must. Bodies are checked against the
platform's interface file (``adapters/ywtb/openapi.yaml``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from fastapi import FastAPI

from adapters.signing import sign_request
from adapters.simulation import ReceivedRequest, ServedApp, SimulatorControl
from adapters.ywtb.client import CaseStatusClient
from adapters.ywtb.errors import PLATFORM
from adapters.ywtb.mapping import callback_body, case_from_callback
from adapters.ywtb.simulator import OPENAPI_FILE, create_app
from contract_tests.base import SignedRestContract
from contract_tests.helpers import SignedReceiver
from schemas.cases import CaseStatusUpdate, InboundCase, Stage
from schemas.errors import (
    Conflict,
    FieldError,
    InvalidInput,
    PlatformRejected,
    PushOutOfOrder,
)

APP_ID = "sgcc-sh-ywtb"
APP_SECRET = "ywtb-contract-secret"
CALLBACK_APP_ID = "ywtb-platform"
CALLBACK_SECRET = "callback-contract-secret"
CST = timezone(timedelta(hours=8))

CASE_NO = "SH2024050600012345"


def update(
    seq: int,
    stage: Stage,
    *,
    case_no: str = CASE_NO,
    event_id: str | None = None,
    reason: str | None = None,
    result_code: str | None = None,
    occurred_at: datetime | None = None,
) -> CaseStatusUpdate:
    return CaseStatusUpdate(
        event_id=event_id or f"evt-{case_no}-{seq}",
        case_no=case_no,
        application_id="app-0001",
        seq=seq,
        stage=stage,
        handler="国网上海浦东供电公司 客户服务中心",
        occurred_at=occurred_at or datetime(2024, 5, 6, 1, 30, seq, tzinfo=UTC),
        reason=reason,
        result_code=result_code,
    )


async def pushes(http: httpx.AsyncClient, simulator: ServedApp) -> list[dict[str, Any]]:
    response = await http.get(f"{simulator.url}/_admin/pushes")
    assert response.status_code == 200
    recorded: list[dict[str, Any]] = response.json()["pushes"]
    return recorded


def schema(name: str) -> dict[str, Any]:
    """A component schema of the interface file, resolvable on its own."""
    document = yaml.safe_load(OPENAPI_FILE.read_text(encoding="utf-8"))
    return {"$ref": f"#/components/schemas/{name}", "components": document["components"]}


def validate(instance: Any, name: str) -> None:
    """OpenAPI 3.1 schema objects are JSON Schema 2020-12."""
    jsonschema.validate(instance, schema(name), cls=jsonschema.Draft202012Validator)


class TestYwtbContract(SignedRestContract):
    """The shared contract (``contract_tests/base.py``), for 一网通办, and what only it
    guarantees: status pushes in order, applied once, and filed cases called back."""

    platform = PLATFORM
    operation = "PushCaseStatus"
    interface_file = OPENAPI_FILE
    app_id = APP_ID
    app_secret = APP_SECRET
    client_type = CaseStatusClient

    def make_app(self, control: SimulatorControl, **options: Any) -> FastAPI:
        """A fresh platform: pushes, SJIDs and sequence numbers start empty."""
        return create_app(
            app_id=APP_ID, app_secret=APP_SECRET, control=control, callback_retry_s=0.05, **options
        )

    async def call(self, client: CaseStatusClient) -> None:
        await client.push_status(update(1, Stage.ACCEPTED))

    def check_signed_request(
        self, received: ReceivedRequest, result: None, started_at: datetime
    ) -> None:
        """The signature covers the push's exact bytes."""
        assert (received.method, received.path) == ("POST", "/api/v1/case-status")
        assert received.headers["content-type"] == "application/json; charset=utf-8"
        assert json.loads(received.body)["SJID"] == f"evt-{CASE_NO}-1"

    def check_attempts_while_down(self, received: list[ReceivedRequest]) -> None:
        super().check_attempts_while_down(received)
        assert {r.body for r in received} == {received[0].body}, "same SJID each time"

    async def check_applied_once(self, http: httpx.AsyncClient, simulator: ServedApp) -> None:
        assert [p["XH"] for p in await pushes(http, simulator)] == [1]

    def validate_answer(self, response: httpx.Response) -> None:
        validate(response.json(), "SuccessEnvelope" if response.is_success else "ErrorEnvelope")

    def check_interface_schemas(self) -> None:
        for name in ("CaseStatus", "CaseFiled", "SuccessEnvelope", "ErrorEnvelope"):
            jsonschema.Draft202012Validator.check_schema(schema(name))

    async def test_a_high_voltage_case_arrives_in_order_with_the_platform_codes(
        self, simulator: ServedApp, http: httpx.AsyncClient
    ) -> None:
        client = self.make_client(simulator.url, http)
        stages = [
            Stage.ACCEPTED,
            Stage.SURVEY_AND_PLAN,
            Stage.EXTERNAL_WORKS,
            Stage.METERING_AND_CONNECTION,
            Stage.COMPLETED,
        ]
        for seq, stage in enumerate(stages, start=1):
            await client.push_status(update(seq, stage))

        recorded = await pushes(http, simulator)
        assert [(p["XH"], p["ZTDM"], p.get("HJMC")) for p in recorded] == [
            (1, "01", None),
            (2, "03", "现场勘查及供电方案答复"),
            (3, "03", "外部工程实施"),
            (4, "03", "装表接电"),
            (5, "04", None),
        ]
        assert recorded[0] == {
            "SJID": f"evt-{CASE_NO}-1",
            "BJBH": CASE_NO,
            "XH": 1,
            "ZTDM": "01",
            "BLR": "国网上海浦东供电公司 客户服务中心",
            "BLSJ": "2024-05-06 09:30:01",  # 01:30:01 UTC in China Standard Time
        }
        assert recorded[-1]["BJJGDM"] == "01", "办结 without a result code means connected"
        for push in recorded:
            validate(push, "CaseStatus")

    @pytest.mark.parametrize(
        ("stage", "reason", "result_code", "expected"),
        [
            (
                Stage.SUPPLEMENT_REQUESTED,
                "缺少产权证明",
                None,
                {"ZTDM": "02", "YY": "缺少产权证明"},
            ),
            (
                Stage.REFUSED,
                "用电地址不在供电范围",
                None,
                {"ZTDM": "05", "YY": "用电地址不在供电范围"},
            ),
            (Stage.COMPLETED, None, "02", {"ZTDM": "04", "BJJGDM": "02"}),
        ],
    )
    async def test_reasons_and_result_codes_travel_with_their_stage(
        self,
        simulator: ServedApp,
        http: httpx.AsyncClient,
        stage: Stage,
        reason: str | None,
        result_code: str | None,
        expected: dict[str, str],
    ) -> None:
        await self.make_client(simulator.url, http).push_status(
            update(1, stage, reason=reason, result_code=result_code)
        )

        [push] = await pushes(http, simulator)
        assert {key: push[key] for key in expected} == expected
        assert "HJMC" not in push
        validate(push, "CaseStatus")

    async def test_the_push_tells_the_customer_the_promised_limit_and_due_time(
        self, simulator: ServedApp, http: httpx.AsyncClient
    ) -> None:
        promised = update(1, Stage.ACCEPTED).model_copy(
            update={
                "time_limit_days": 10,
                "day_kind": "working",
                "due_at": datetime(2024, 5, 20, 1, 30, tzinfo=UTC),
            }
        )
        await self.make_client(simulator.url, http).push_status(promised)

        [push] = await pushes(http, simulator)
        assert {k: push[k] for k in ("CNSX", "SXLX", "CNBJSJ")} == {
            "CNSX": 10,
            "SXLX": "2",  # 工作日
            "CNBJSJ": "2024-05-20 09:30:00",
        }
        validate(push, "CaseStatus")

    async def test_a_repeated_push_is_success_and_recorded_once(
        self, simulator: ServedApp, http: httpx.AsyncClient, control: SimulatorControl
    ) -> None:
        client = self.make_client(simulator.url, http)
        accepted = update(1, Stage.ACCEPTED)

        await client.push_status(accepted)
        await client.push_status(accepted)

        assert control.calls["PushCaseStatus"] == 2
        assert [p["SJID"] for p in await pushes(http, simulator)] == [accepted.event_id]

    async def test_the_duplicate_answer_is_the_success_envelope(
        self, simulator: ServedApp, http: httpx.AsyncClient
    ) -> None:
        content = json.dumps(
            {
                "SJID": "evt-manual-1",
                "BJBH": CASE_NO,
                "XH": 1,
                "ZTDM": "01",
                "BLR": "客户服务中心",
                "BLSJ": "2024-05-06 09:30:00",
            }
        ).encode()
        path = "/api/v1/case-status"
        answers = []
        for _ in range(2):
            headers = sign_request("POST", path, content, app_id=APP_ID, secret=APP_SECRET)
            answers.append(await http.post(simulator.url + path, content=content, headers=headers))

        assert [(a.status_code, a.json()) for a in answers] == [
            (200, {"code": "0000", "msg": "成功"}),
            (200, {"code": "0000", "msg": "重复推送，已接收"}),
        ]
        for answer in answers:
            validate(answer.json(), "SuccessEnvelope")

    async def test_a_push_ahead_of_the_case_is_out_of_order_naming_the_last_accepted_seq(
        self, simulator: ServedApp, http: httpx.AsyncClient
    ) -> None:
        client = self.make_client(simulator.url, http)

        with pytest.raises(PushOutOfOrder) as first:
            await client.push_status(update(2, Stage.SURVEY_AND_PLAN))
        await client.push_status(update(1, Stage.ACCEPTED))
        with pytest.raises(PushOutOfOrder) as second:
            await client.push_status(update(3, Stage.METERING_AND_CONNECTION))
        await client.push_status(update(2, Stage.SURVEY_AND_PLAN))

        assert (first.value.last_seq, second.value.last_seq) == (0, 1)
        assert first.value.context["platform_code"] == "4090"
        assert isinstance(first.value, Conflict)
        assert [p["XH"] for p in await pushes(http, simulator)] == [1, 2]

    async def test_the_out_of_order_answer_states_the_last_seq_in_the_envelope(
        self, simulator: ServedApp, http: httpx.AsyncClient
    ) -> None:
        content = json.dumps(
            {
                "SJID": "evt-ahead",
                "BJBH": CASE_NO,
                "XH": 3,
                "ZTDM": "01",
                "BLR": "x",
                "BLSJ": "2024-05-06 09:30:00",
            }
        ).encode()
        path = "/api/v1/case-status"
        headers = sign_request("POST", path, content, app_id=APP_ID, secret=APP_SECRET)
        answer = await http.post(simulator.url + path, content=content, headers=headers)

        assert answer.status_code == 409
        assert answer.json()["code"] == "4090" and answer.json()["data"] == {"ZHXH": 0}
        validate(answer.json(), "ErrorEnvelope")

    async def test_a_seq_already_accepted_is_success_and_changes_nothing(
        self, simulator: ServedApp, http: httpx.AsyncClient
    ) -> None:
        client = self.make_client(simulator.url, http)
        await client.push_status(update(1, Stage.ACCEPTED))
        await client.push_status(update(2, Stage.METERING_AND_CONNECTION))

        await client.push_status(update(1, Stage.ACCEPTED, event_id="evt-late-copy"))

        assert [p["XH"] for p in await pushes(http, simulator)] == [1, 2]

    async def test_a_rejected_case_is_platform_rejected_and_not_retried(
        self, simulator: ServedApp, http: httpx.AsyncClient, control: SimulatorControl
    ) -> None:
        put = await http.put(f"{simulator.url}/_admin/reject", json=[CASE_NO])
        assert put.json() == [CASE_NO]

        with pytest.raises(PlatformRejected) as caught:
            await self.make_client(simulator.url, http).push_status(update(1, Stage.ACCEPTED))

        assert caught.value.platform == "ywtb"
        assert caught.value.platform_code == "4004"
        assert control.calls["PushCaseStatus"] == 1
        assert await pushes(http, simulator) == []

        cleared = await http.delete(f"{simulator.url}/_admin/reject")
        assert cleared.status_code == 204
        await self.make_client(simulator.url, http).push_status(update(1, Stage.ACCEPTED))
        assert len(await pushes(http, simulator)) == 1

    @pytest.mark.parametrize(
        ("bad", "field"),
        [
            (update(1, Stage.ACCEPTED, occurred_at=datetime(2024, 5, 6, 9, 30)), "occurred_at"),
            (update(1, Stage.REFUSED), "reason"),
            (update(1, Stage.COMPLETED, result_code="99"), "result_code"),
        ],
    )
    async def test_a_push_the_platform_would_refuse_never_leaves(
        self,
        simulator: ServedApp,
        http: httpx.AsyncClient,
        control: SimulatorControl,
        bad: CaseStatusUpdate,
        field: str,
    ) -> None:
        with pytest.raises(InvalidInput) as caught:
            await self.make_client(simulator.url, http).push_status(bad)

        assert caught.value.field == field
        assert not control.received

    async def test_a_malformed_push_is_refused_with_the_field(
        self, simulator: ServedApp, http: httpx.AsyncClient
    ) -> None:
        content = json.dumps(
            {"SJID": "e", "BJBH": CASE_NO, "XH": 1, "ZTDM": "03", "BLR": "x", "BLSJ": "2024-05-06"}
        ).encode()
        path = "/api/v1/case-status"
        headers = sign_request("POST", path, content, app_id=APP_ID, secret=APP_SECRET)

        answer = await http.post(simulator.url + path, content=content, headers=headers)

        assert (answer.status_code, answer.json()["code"]) == (400, "4000")
        assert "HJMC" in answer.json()["msg"]

    async def test_a_filed_case_reaches_the_connector_signed_and_retried_until_accepted(
        self, simulator: ServedApp, http: httpx.AsyncClient
    ) -> None:
        receiver = callback_receiver(failures=1)
        with ServedApp(receiver.app) as served_receiver:
            delivery = await file_case(http, simulator, served_receiver)

        assert delivery["delivered"] is True
        assert [a["status"] for a in delivery["attempts"]] == [503, 200]
        assert receiver.refused == []
        assert len(receiver.bodies) == 2
        assert receiver.bodies[0] == receiver.bodies[1]
        assert receiver.nonces[0] != receiver.nonces[1], "every delivery is signed afresh"

        body = json.loads(receiver.bodies[-1])
        validate(body, "CaseFiled")
        assert {k: body[k] for k in ("SQRZJLX", "YWLX", "DYDJ", "RL", "XZQH", "SBSJ")} == {
            "SQRZJLX": "001",
            "YWLX": "01",
            "DYDJ": "02",
            "RL": 630.0,
            "XZQH": "310115",
            "SBSJ": "2024-05-06 10:15:00",
        }
        assert case_from_callback(body) == FILED

        listed = await http.get(f"{simulator.url}/_admin/deliveries")
        assert listed.json()["deliveries"] == [delivery]
        assert CALLBACK_SECRET not in listed.text

    async def test_a_callback_the_connector_refuses_is_retried_a_bounded_number_of_times(
        self, simulator: ServedApp, http: httpx.AsyncClient
    ) -> None:
        receiver = callback_receiver(failures=0)
        with ServedApp(receiver.app) as served_receiver:
            delivery = await file_case(
                http, simulator, served_receiver, secret="not-the-secret", max_attempts=2
            )

        assert delivery["delivered"] is False
        assert [a["status"] for a in delivery["attempts"]] == [401, 401]
        assert receiver.refused == ["bad_signature", "bad_signature"]
        assert receiver.bodies == []


# --- filed cases (the platform calls us) -----------------------------------

FILED = InboundCase(
    case_no="SH2024050600099999",
    item_code="310100000000-SGCC-0001",
    credential_type="uscc",
    credential_no="91310115MA1HW74707",
    applicant_name="上海临港绿能储能科技有限公司",
    district_code="310115",
    site_address="上海市浦东新区新杨公路1800弄2号",
    business_type="new_connection",
    voltage_level="10kV",
    capacity_kva=630.0,
    project_code="2020-310115-44-01-000001",
    filed_at=datetime(2024, 5, 6, 10, 15, 0, tzinfo=CST),
)


def callback_receiver(*, failures: int) -> SignedReceiver:
    """The connector's callback endpoint in miniature: verifies, answers 503 ``failures``
    times, then 200."""
    return SignedReceiver(
        "/callbacks/ywtb/cases", CALLBACK_APP_ID, CALLBACK_SECRET, fail_first=failures
    )


async def file_case(
    http: httpx.AsyncClient,
    simulator: ServedApp,
    receiver: ServedApp,
    *,
    secret: str = CALLBACK_SECRET,
    max_attempts: int = 5,
) -> dict[str, Any]:
    request = {
        **FILED.model_dump(mode="json"),
        "callback_url": f"{receiver.url}/callbacks/ywtb/cases",
        "callback_app_id": CALLBACK_APP_ID,
        "callback_secret": secret,
        "max_attempts": max_attempts,
    }
    response = await http.post(f"{simulator.url}/_admin/file-case", json=request, timeout=30)
    assert response.status_code == 200, response.text
    delivery: dict[str, Any] = response.json()
    return delivery


def test_a_resident_filing_a_low_voltage_capacity_increase_maps_to_the_connector_words() -> None:
    case = case_from_callback(
        {
            "BJBH": "SH-1",
            "SXBM": "310100000000-SGCC-0002",
            "SQRZJLX": "111",
            "SQRZJHM": "31011519800101002x",
            "SQRMC": "张三",
            "XZQH": "310104",
            "YDDZ": "上海市徐汇区漕宝路1号",
            "YWLX": "02",
            "DYDJ": "01",
            "RL": 16,
            "SBSJ": "2024-05-06 23:59:59",
        }
    )

    assert (case.credential_type, case.business_type, case.voltage_level) == (
        "resident_id",
        "capacity_increase",
        "0.4kV",
    )
    assert case.credential_no == "31011519800101002X"
    assert case.capacity_kva == 16.0
    assert case.project_code is None
    assert case.filed_at == datetime(2024, 5, 6, 15, 59, 59, tzinfo=UTC)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"SQRZJLX": "999"}, "SQRZJLX"),
        ({"DYDJ": "10kV"}, "DYDJ"),
        ({"YWLX": None}, "YWLX"),
        ({"RL": "630"}, "RL"),
        ({"RL": 0}, "RL"),
        ({"XZQH": "3101"}, "XZQH"),
        ({"SBSJ": "2024-05-06T10:15:00+08:00"}, "SBSJ"),
        ({"BJBH": " "}, "BJBH"),
        ({"XMDM": 12}, "XMDM"),
    ],
)
def test_an_unreadable_callback_names_the_bad_field(change: dict[str, Any], field: str) -> None:
    body = {**callback_body(FILED), **change}

    with pytest.raises(FieldError) as caught:
        case_from_callback(body)

    assert caught.value.field == field
