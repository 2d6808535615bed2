"""The permit adapter against its simulator over loopback HTTP, the simulator's
decision callbacks against a receiver that verifies them, and both against the
platform's interface file (``adapters/permit/openapi.yaml``)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime
from typing import Any

import httpx
import jsonschema
import pytest
from fastapi import FastAPI
from stdnum.cn import uscc

from adapters.envelope import encode
from adapters.permit.client import PermitClient
from adapters.permit.errors import PLATFORM
from adapters.permit.mapping import body_from_request, decision_from_callback
from adapters.permit.simulator import OPENAPI_FILE, CallbackAttempt, create_app
from adapters.signing import sign_request
from adapters.simulation import Faults, ReceivedRequest, ServedApp, SimulatorControl
from contract_tests.base import SignedRestContract
from contract_tests.helpers import SignedReceiver
from contract_tests.helpers import openapi as load_openapi
from contract_tests.helpers import response_schema as answer_schema
from contract_tests.helpers import validate_draft4 as validate
from schemas.errors import FieldError, PlatformRejected, PlatformUnavailable
from schemas.permits import PermitDecision, PermitFiling, PermitOutcome, PermitRequest

APP_ID = "ywtb-sgcc-sh"
APP_SECRET = "contract-test-secret"
PLATFORM_APP_ID = "szjl-platform"  # the platform signs its callbacks as itself
CALLBACK_SECRET = "contract-test-callback-secret"
CALLBACK_PATH = "/callbacks/permit-decisions"

BUILDER_USCC = "913101152A7B0Q1F4T"
CONTRACTOR_USCC = "913101043165T7R27J"

REQUEST = PermitRequest(
    application_id="APP-20240603-0001",
    works_name="张江光伏储能示范项目10千伏外线工程",
    builder_name="上海浦江光伏科技有限公司",
    builder_uscc=BUILDER_USCC,
    contractor_name="上海徐汇电机制造有限公司",
    contractor_uscc=CONTRACTOR_USCC,
    road="张江路",
    section_start="科苑路口",
    section_end="祖冲之路口",
    district_code="310115",
    excavation_length_m=120.5,
    excavation_area_m2=96.4,
    period_start=date(2024, 7, 1),
    period_end=date(2024, 7, 5),
)
LONG_REQUEST = REQUEST.model_copy(
    update={"section_end": "龙东大道口", "excavation_length_m": 800.0, "excavation_area_m2": 640.0}
)

WIRE_BODY = {
    "GLYWH": "APP-20240603-0001",
    "GCMC": "张江光伏储能示范项目10千伏外线工程",
    "JSDW": "上海浦江光伏科技有限公司",
    "JSDWDM": BUILDER_USCC,
    "SGDW": "上海徐汇电机制造有限公司",
    "SGDWDM": CONTRACTOR_USCC,
    "DLMC": "张江路",
    "QD": "科苑路口",
    "ZD": "祖冲之路口",
    "XZQH": "310115",
    "WJCD": 120.5,
    "WJMJ": 96.4,
    "SGQXZ": "2024-07-01",
    "SGQXZH": "2024-07-05",
}
"""REQUEST as the platform must receive it (besides the request id QQLSH)."""


def lookup(app_id: str) -> str | None:
    return APP_SECRET if app_id == APP_ID else None


def lookup_platform(app_id: str) -> str | None:
    return CALLBACK_SECRET if app_id == PLATFORM_APP_ID else None


def permit_app(
    *, callback_url: str | None = None, control: SimulatorControl | None = None, **options: Any
) -> FastAPI:
    return create_app(
        app_id=APP_ID,
        app_secret=APP_SECRET,
        callback_url=callback_url,
        callback_app_id=PLATFORM_APP_ID,
        callback_secret=options.pop("callback_secret", CALLBACK_SECRET),
        decision_delay_s=options.pop("decision_delay_s", 0.05),
        callback_backoff_s=options.pop("callback_backoff_s", 0.05),
        control=control,
        **options,
    )


# --- the decision receiver (our callback endpoint, as the gateway will hold it) ---


def acknowledged_decisions(receiver: SignedReceiver) -> dict[str, PermitDecision]:
    """The acknowledged decisions by 受理编号, parsed as the gateway will."""
    parsed = [decision_from_callback(json.loads(d.body)) for d in receiver.deliveries]
    pairs = zip(parsed, receiver.deliveries, strict=True)
    return {d.filing_no: d for d, raw in pairs if 200 <= raw.answered < 300}


@pytest.fixture
def receiver() -> Iterator[tuple[SignedReceiver, ServedApp]]:
    state = SignedReceiver(CALLBACK_PATH, PLATFORM_APP_ID, CALLBACK_SECRET, fail_first=2)
    with ServedApp(state.app) as served:
        yield state, served


async def eventually(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def acknowledged(app: FastAPI, filing_no: str) -> bool:
    return CallbackAttempt(filing_no, 200) in app.state.callbacks


# --- the interface file ---


def openapi() -> dict[str, Any]:
    return load_openapi(OPENAPI_FILE)


def schema(name: str) -> dict[str, Any]:
    """A component schema, resolvable on its own."""
    components = openapi()["components"]
    return {**components["schemas"][name], "components": components}


def response_schema(status: str) -> dict[str, Any]:
    return answer_schema(openapi(), "/api/v1/permit-applications", "post", status)


async def signed_post(
    http: httpx.AsyncClient, served: ServedApp, body: dict[str, Any], **sign: Any
) -> httpx.Response:
    path, content = "/api/v1/permit-applications", encode(body)
    headers = sign_request("POST", path, content, app_id=APP_ID, secret=APP_SECRET, **sign)
    headers["Content-Type"] = "application/json"
    return await http.post(served.url + path, content=content, headers=headers)


class TestPermitContract(SignedRestContract):
    """The shared contract (``contract_tests/base.py``), for the road authority, and what
    only it guarantees: idempotent filings and decisions called back signed."""

    platform = PLATFORM
    operation = "FilePermit"
    interface_file = OPENAPI_FILE
    app_id = APP_ID
    app_secret = APP_SECRET
    client_type = PermitClient

    def make_app(self, control: SimulatorControl, **options: Any) -> FastAPI:
        return permit_app(control=control, **options)

    async def call(self, client: PermitClient) -> PermitFiling:
        return await client.file_permit(REQUEST)

    def check_result(self, result: PermitFiling) -> None:
        assert re.fullmatch(r"ZJL\d{14}", result.filing_no)

    def check_signed_request(
        self, received: ReceivedRequest, result: PermitFiling, started_at: datetime
    ) -> None:
        """A filing is the documented body, signed."""
        assert (received.method, received.path) == ("POST", "/api/v1/permit-applications")
        assert received.headers["content-type"] == "application/json; charset=utf-8"
        body = json.loads(received.body.decode("utf-8"))
        request_id = body.pop("QQLSH")
        assert body == WIRE_BODY
        assert re.fullmatch(r"[0-9a-f]{32}", request_id)
        assert "张江路".encode() in received.body, "Chinese travels as UTF-8, not \\u escapes"
        validate({**body, "QQLSH": request_id}, schema("PermitApplication"))
        assert started_at <= result.filed_at <= datetime.now().astimezone()

    def validate_answer(self, response: httpx.Response) -> None:
        validate(response.json(), response_schema(str(response.status_code)))

    def check_interface_schemas(self) -> None:
        for name in ("PermitApplication", "FilingEnvelope", "ErrorEnvelope", "Decision"):
            jsonschema.Draft4Validator.check_schema(schema(name))

    @pytest.fixture
    def served(self, simulator: ServedApp) -> ServedApp:
        return simulator

    async def test_the_same_filing_twice_is_one_filing(
        self, served: ServedApp, http: httpx.AsyncClient, control: SimulatorControl
    ) -> None:
        client = self.make_client(served.url, http)

        first = await client.file_permit(REQUEST)
        again = await client.file_permit(REQUEST)
        other_section = await client.file_permit(LONG_REQUEST)

        assert again == first
        assert other_section.filing_no != first.filing_no
        bodies = [json.loads(r.body) for r in control.received]
        assert bodies[0] == bodies[1], "a repeat sends the same request id"
        assert bodies[2]["QQLSH"] != bodies[0]["QQLSH"]
        assert len({r.headers["x-nonce"] for r in control.received}) == 3

    async def test_a_retry_after_a_timeout_does_not_file_twice(
        self, http: httpx.AsyncClient
    ) -> None:
        # The platform stores the filing after the client gave up waiting; the retry gets it back.
        control = SimulatorControl(faults=Faults(latency_s=0.6))
        app = permit_app(control=control, decision_delay_s=60)
        with ServedApp(app) as served:
            with pytest.raises(PlatformUnavailable):
                await self.make_client(served.url, http, timeout_s=0.3, attempts=2).file_permit(
                    REQUEST
                )
            await eventually(lambda: control.calls["FilePermit"] == 2)
            (stored,) = app.state.filings.values()
            control.faults = Faults()

            filing = await self.make_client(served.url, http).file_permit(REQUEST)

            assert filing.filing_no == stored.filing.filing_no
            assert len(app.state.filings) == 1
            assert control.calls["FilePermit"] == 3

    async def test_the_same_request_id_with_other_works_is_a_conflict(
        self, served: ServedApp, http: httpx.AsyncClient
    ) -> None:
        body = body_from_request(REQUEST)
        first = await signed_post(http, served, body)
        changed = await signed_post(http, served, {**body, "WJCD": 999.0})

        assert (first.status_code, first.json()["code"]) == (200, "0000")
        assert (changed.status_code, changed.json()["code"]) == (409, "4090")
        validate(changed.json(), response_schema("409"))

    async def test_simulator_answers_validate_against_openapi(
        self, served: ServedApp, http: httpx.AsyncClient
    ) -> None:
        accepted = await signed_post(http, served, body_from_request(REQUEST))
        invalid = await signed_post(http, served, {**body_from_request(REQUEST), "WJCD": -1})
        unknown = await signed_post(http, served, {**body_from_request(REQUEST), "BZ": "备注"})
        unsigned = await http.post(f"{served.url}/api/v1/permit-applications", json=WIRE_BODY)

        assert accepted.status_code == 200
        validate(accepted.json(), response_schema("200"))
        for response, status, code, names in [
            (invalid, 400, "4000", "WJCD"),
            (unknown, 400, "4000", "BZ"),
            (unsigned, 401, "4010", "X-App-Id"),
        ]:
            assert (response.status_code, response.json()["code"]) == (status, code)
            assert names in response.json()["msg"]
            validate(response.json(), response_schema(str(status)))

    async def test_an_invalid_field_is_rejected_and_not_retried(
        self, served: ServedApp, http: httpx.AsyncClient, control: SimulatorControl
    ) -> None:
        bad_builder = REQUEST.model_copy(update={"builder_uscc": "913101152A7B0Q1F4X"})

        with pytest.raises(PlatformRejected) as caught:
            await self.make_client(served.url, http).file_permit(bad_builder)

        assert caught.value.platform_code == "4000"
        assert "JSDWDM" in caught.value.detail
        assert control.calls["FilePermit"] == 1

    async def test_an_approval_is_called_back_signed_until_acknowledged(
        self, receiver: tuple[SignedReceiver, ServedApp], http: httpx.AsyncClient
    ) -> None:
        state, receiving = receiver
        app = permit_app(callback_url=receiving.url + CALLBACK_PATH)
        with ServedApp(app) as served:
            filing = await self.make_client(served.url, http).file_permit(REQUEST)
            await eventually(lambda: acknowledged(app, filing.filing_no))
            listed = (await http.get(f"{served.url}/_admin/callbacks")).json()

        assert app.state.callbacks == [
            (filing.filing_no, 503),
            (filing.filing_no, 503),
            (filing.filing_no, 200),
        ]
        assert listed == {
            "callbacks": [{"SLBH": filing.filing_no, "status": s} for s in (503, 503, 200)]
        }
        assert not state.refused
        assert [d.answered for d in state.deliveries] == [503, 503, 200]
        assert len({d.body for d in state.deliveries}) == 1, (
            "every attempt carries the same decision"
        )
        assert len({d.headers["x-nonce"] for d in state.deliveries}) == 3, (
            "every attempt signed afresh"
        )
        assert state.deliveries[0].headers["x-app-id"] == PLATFORM_APP_ID
        body = json.loads(state.deliveries[-1].body)
        validate(body, schema("Decision"))
        assert body["GLYWH"] == REQUEST.application_id
        decision = decision_from_callback(body)
        assert decision == PermitDecision(
            filing_no=filing.filing_no,
            outcome=PermitOutcome.APPROVED,
            permit_no=decision.permit_no,
            valid_from=REQUEST.period_start,
            valid_to=REQUEST.period_end,
            decided_at=decision.decided_at,
        )
        assert decision.permit_no and re.fullmatch(r"沪路政掘〔\d{4}〕\d{6}号", decision.permit_no)
        assert filing.filed_at <= decision.decided_at <= datetime.now().astimezone()

    async def test_refuse_long_refuses_a_long_excavation_with_a_reason(
        self, receiver: tuple[SignedReceiver, ServedApp], http: httpx.AsyncClient
    ) -> None:
        state, receiving = receiver
        state.fail_first = 0
        app = permit_app(callback_url=receiving.url + CALLBACK_PATH, policy="refuse-long")
        with ServedApp(app) as served:
            short = await self.make_client(served.url, http).file_permit(REQUEST)
            long = await self.make_client(served.url, http).file_permit(LONG_REQUEST)
            await eventually(
                lambda: acknowledged(app, short.filing_no) and acknowledged(app, long.filing_no)
            )

        decisions = acknowledged_decisions(state)
        assert decisions[short.filing_no].outcome is PermitOutcome.APPROVED
        refusal = decisions[long.filing_no]
        assert refusal.outcome is PermitOutcome.REFUSED
        assert refusal.reason and "挖掘长度超过路段允许范围" in refusal.reason
        assert (refusal.permit_no, refusal.valid_from, refusal.valid_to) == (None, None, None)
        for delivery in state.deliveries:
            validate(json.loads(delivery.body), schema("Decision"))

    async def test_the_policy_can_be_changed_at_run_time(
        self, receiver: tuple[SignedReceiver, ServedApp], http: httpx.AsyncClient
    ) -> None:
        state, receiving = receiver
        state.fail_first = 0
        app = permit_app(callback_url=receiving.url + CALLBACK_PATH, decision_delay_s=30)
        with ServedApp(app) as served:
            changed = await http.put(
                f"{served.url}/_admin/policy",
                json={"policy": "refuse-all", "decision_delay_s": 0.05},
            )
            unknown = await http.put(f"{served.url}/_admin/policy", json={"policy": "bribe"})
            filing = await self.make_client(served.url, http).file_permit(REQUEST)
            await eventually(lambda: acknowledged(app, filing.filing_no))

        assert changed.json() == {"policy": "refuse-all", "decision_delay_s": 0.05}
        assert unknown.status_code == 422
        refusal = acknowledged_decisions(state)[filing.filing_no]
        assert refusal.outcome is PermitOutcome.REFUSED and refusal.reason

    async def test_a_callback_the_receiver_cannot_verify_is_retried_a_bounded_number_of_times(
        self, receiver: tuple[SignedReceiver, ServedApp], http: httpx.AsyncClient
    ) -> None:
        state, receiving = receiver
        app = permit_app(
            callback_url=receiving.url + CALLBACK_PATH,
            callback_secret="not-the-agreed-secret",
            callback_attempts=3,
        )
        with ServedApp(app) as served:
            filing = await self.make_client(served.url, http).file_permit(REQUEST)
            await eventually(lambda: len(app.state.callbacks) == 3)
            await asyncio.sleep(0.3)  # longer than the next back-off would be

        assert app.state.callbacks == [(filing.filing_no, 401)] * 3
        assert state.refused == ["bad_signature"] * 3
        assert not state.deliveries

    async def test_shutdown_cancels_pending_decisions_and_callbacks(
        self, receiver: tuple[SignedReceiver, ServedApp], http: httpx.AsyncClient
    ) -> None:
        state, receiving = receiver
        state.fail_first = 1_000
        app = permit_app(callback_url=receiving.url + CALLBACK_PATH, callback_backoff_s=0.5)
        served = ServedApp(app).start()
        try:
            retrying = await self.make_client(served.url, http).file_permit(REQUEST)
            await eventually(lambda: len(app.state.callbacks) >= 1)
            await http.put(
                f"{served.url}/_admin/policy", json={"policy": "approve", "decision_delay_s": 60}
            )
            await self.make_client(served.url, http).file_permit(
                LONG_REQUEST
            )  # decision still pending
        finally:
            started = time.monotonic()
            served.stop()

        assert time.monotonic() - started < 5
        attempts = list(app.state.callbacks)
        await asyncio.sleep(1.0)
        assert app.state.callbacks == attempts, "no callback after shutdown"
        assert {a.filing_no for a in attempts} == {retrying.filing_no}


def test_test_usccs_carry_valid_check_characters() -> None:
    assert uscc.is_valid(BUILDER_USCC) and uscc.is_valid(CONTRACTOR_USCC)


# --- reading callbacks ---

APPROVAL = {
    "SLBH": "ZJL20240603000001",
    "GLYWH": "APP-20240603-0001",
    "SPJG": "1",
    "XKZH": "沪路政掘〔2024〕000001号",
    "YXQZ": "2024-07-01",
    "YXQZH": "2024-07-05",
    "SPSJ": "2024-06-05 16:20:00",
}


def test_a_callback_reads_in_beijing_time() -> None:
    decision = decision_from_callback(APPROVAL)

    assert decision.decided_at.isoformat() == "2024-06-05T16:20:00+08:00"
    assert (decision.valid_from, decision.valid_to) == (date(2024, 7, 1), date(2024, 7, 5))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"SLBH": None}, "SLBH"),
        ({"GLYWH": ""}, "GLYWH"),
        ({"SPJG": "3"}, "SPJG"),
        ({"XKZH": None}, "XKZH"),
        ({"YXQZH": "2024-06-30"}, "YXQZH"),
        ({"SPSJ": "2024/06/05 16:20"}, "SPSJ"),
        ({"SPJG": "2"}, "BYXKLY"),
    ],
)
def test_an_unreadable_callback_names_the_field(change: dict[str, Any], field: str) -> None:
    body = {key: value for key, value in {**APPROVAL, **change}.items() if value is not None}

    with pytest.raises(FieldError) as caught:
        decision_from_callback(body)

    assert caught.value.field == field
