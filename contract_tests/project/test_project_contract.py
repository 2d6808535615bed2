"""The project adapter against its simulator over loopback HTTP, and the simulator
against the platform's interface file (``adapters/project/openapi.yaml``)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import httpx
import jsonschema
import pytest
from fastapi import FastAPI
from stdnum.cn import uscc

from adapters.project.client import ProjectClient
from adapters.project.errors import PLATFORM
from adapters.project.simulator import OPENAPI_FILE, create_app
from adapters.signing import sign_request
from adapters.simulation import ReceivedRequest, ServedApp, SimulatorControl
from contract_tests.base import SignedRestContract
from contract_tests.helpers import openapi
from contract_tests.helpers import response_schema as answer_schema
from contract_tests.helpers import validate_draft4 as validate
from schemas.errors import InvalidInput, NotFound
from schemas.evidence import ApprovalType, ProjectApproval, ProjectStatus
from schemas.seed import Seed

APP_ID = "ywtb-sgcc-sh"
APP_SECRET = "contract-test-secret"

SOLAR_USCC = "913101152A7B0Q1F4T"  # has a licence in the seed
MOTOR_USCC = "913101043165T7R27J"  # has a licence in the seed
DEPOT_USCC = "913101127M3K8P4D90"  # no licence in the seed

SEED = Seed.model_validate(
    {
        "licences": [
            {
                "uscc": SOLAR_USCC,
                "name": "上海浦江光伏科技有限公司",
                "legal_representative": "王立新",
                "address": "上海市浦东新区张江路100号",
                "status": "存续",
                "valid_from": "2015-03-01",
                "valid_to": None,
            },
            {
                "uscc": MOTOR_USCC,
                "name": "上海徐汇电机制造有限公司",
                "legal_representative": "陈敏",
                "address": "上海市徐汇区漕宝路200号",
                "status": "在业",
                "valid_from": "2010-06-15",
                "valid_to": "2040-06-14",
            },
        ],
        "projects": [
            {
                "project_code": "2020-310115-44-01-000001",
                "name": "张江光伏储能示范项目",
                "owner_uscc": SOLAR_USCC,
                "approval_type": "审批",
                "document_no": "沪发改能源〔2020〕77号",
                "approved_on": "2020-05-20",
                "status": "valid",
                "issuing_authority": "上海市发展和改革委员会",
            },
            {
                "project_code": "2021-310104-38-02-000002",
                "name": "漕河泾电机生产线扩建项目",
                "owner_uscc": MOTOR_USCC,
                "approval_type": "核准",
                "document_no": "徐发改核〔2021〕12号",
                "approved_on": "2021-09-01",
                "status": "valid",
                "issuing_authority": "徐汇区发展和改革委员会",
            },
            {
                "project_code": "2021-310104-38-02-000004",
                "name": "漕河泾电机研发中心项目",
                "owner_uscc": MOTOR_USCC,
                "owner_name": "上海徐汇电机有限公司",
                "approval_type": "核准",
                "document_no": "徐发改核〔2021〕13号",
                "approved_on": "2021-10-08",
                "status": "valid",
                "issuing_authority": "徐汇区发展和改革委员会",
            },
            {
                "project_code": "2022-310112-59-03-000003",
                "name": "闵行物流仓储中心项目",
                "owner_uscc": DEPOT_USCC,
                "approval_type": "备案",
                "document_no": "闵发改备〔2022〕301号",
                "approved_on": "2022-02-10",
                "status": "revoked",
                "issuing_authority": "闵行区发展和改革委员会",
            },
        ],
    }
)

EXPECTED = {
    "2020-310115-44-01-000001": ProjectApproval(
        project_code="2020-310115-44-01-000001",
        name="张江光伏储能示范项目",
        owner_uscc=SOLAR_USCC,
        owner_name="上海浦江光伏科技有限公司",
        approval_type=ApprovalType.APPROVAL,
        document_no="沪发改能源〔2020〕77号",
        issuing_authority="上海市发展和改革委员会",
        approved_on=date(2020, 5, 20),
        status=ProjectStatus.VALID,
    ),
    "2021-310104-38-02-000002": ProjectApproval(
        project_code="2021-310104-38-02-000002",
        name="漕河泾电机生产线扩建项目",
        owner_uscc=MOTOR_USCC,
        owner_name="上海徐汇电机制造有限公司",
        approval_type=ApprovalType.AUTHORISATION,
        document_no="徐发改核〔2021〕12号",
        issuing_authority="徐汇区发展和改革委员会",
        approved_on=date(2021, 9, 1),
        status=ProjectStatus.VALID,
    ),
    "2021-310104-38-02-000004": ProjectApproval(
        project_code="2021-310104-38-02-000004",
        name="漕河泾电机研发中心项目",
        owner_uscc=MOTOR_USCC,
        owner_name="上海徐汇电机有限公司",  # the seed's owner_name, not the licence's name
        approval_type=ApprovalType.AUTHORISATION,
        document_no="徐发改核〔2021〕13号",
        issuing_authority="徐汇区发展和改革委员会",
        approved_on=date(2021, 10, 8),
        status=ProjectStatus.VALID,
    ),
    "2022-310112-59-03-000003": ProjectApproval(
        project_code="2022-310112-59-03-000003",
        name="闵行物流仓储中心项目",
        owner_uscc=DEPOT_USCC,
        owner_name=None,
        approval_type=ApprovalType.FILING,
        document_no="闵发改备〔2022〕301号",
        issuing_authority="闵行区发展和改革委员会",
        approved_on=date(2022, 2, 10),
        status=ProjectStatus.REVOKED,
    ),
}
UNKNOWN_CODE = "2023-310101-44-03-999999"


MAPPED = "2020-310115-44-01-000001"


def response_schema(status: str) -> dict[str, Any]:
    """The JSON schema of an answer with this status, resolvable on its own."""
    return answer_schema(openapi(OPENAPI_FILE), "/api/v1/projects/{XMDM}", "get", status)


async def signed_get(http: httpx.AsyncClient, served: ServedApp, path: str) -> httpx.Response:
    headers = sign_request("GET", path, b"", app_id=APP_ID, secret=APP_SECRET)
    return await http.get(served.url + path, headers=headers)


def test_seed_usccs_carry_valid_check_characters() -> None:
    assert all(uscc.is_valid(code) for code in (SOLAR_USCC, MOTOR_USCC, DEPOT_USCC))


class TestProjectContract(SignedRestContract):
    """The shared contract (``contract_tests/base.py``), for the project platform, and
    what only it guarantees."""

    platform = PLATFORM
    operation = "GetProject"
    interface_file = OPENAPI_FILE
    app_id = APP_ID
    app_secret = APP_SECRET
    client_type = ProjectClient

    def make_app(self, control: SimulatorControl, **options: Any) -> FastAPI:
        return create_app(SEED, app_id=APP_ID, app_secret=APP_SECRET, control=control, **options)

    async def call(self, client: ProjectClient) -> ProjectApproval:
        return await client.fetch_project(MAPPED)

    def check_result(self, result: ProjectApproval) -> None:
        assert result == EXPECTED[MAPPED]
        assert result.approval_type is ApprovalType.APPROVAL

    def check_signed_request(
        self, received: ReceivedRequest, result: Any, started_at: datetime
    ) -> None:
        assert received.method == "GET"
        assert received.path == f"/api/v1/projects/{MAPPED}"

    def validate_answer(self, response: httpx.Response) -> None:
        validate(response.json(), response_schema(str(response.status_code)))

    def check_interface_schemas(self) -> None:
        jsonschema.Draft4Validator.check_schema(response_schema("200"))

    @pytest.mark.parametrize("project_code", sorted(EXPECTED))
    async def test_each_approval_type_and_status_maps_right(
        self, simulator: ServedApp, http: httpx.AsyncClient, project_code: str
    ) -> None:
        project = await self.make_client(simulator.url, http).fetch_project(project_code)

        assert project == EXPECTED[project_code]

    @pytest.mark.parametrize("project_code", sorted(EXPECTED))
    async def test_simulator_answers_validate_against_openapi(
        self, simulator: ServedApp, http: httpx.AsyncClient, project_code: str
    ) -> None:
        response = await signed_get(http, simulator, f"/api/v1/projects/{project_code}")

        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
        validate(response.json(), response_schema("200"))
        assert response.json()["data"]["XMDM"] == project_code

    async def test_simulator_errors_validate_against_openapi(
        self, simulator: ServedApp, http: httpx.AsyncClient
    ) -> None:
        missing = await signed_get(http, simulator, f"/api/v1/projects/{UNKNOWN_CODE}")
        malformed = await signed_get(http, simulator, "/api/v1/projects/not-a-code")
        unsigned = await http.get(f"{simulator.url}/api/v1/projects/{UNKNOWN_CODE}")

        for response, status, code in [
            (missing, 404, "4004"),
            (malformed, 400, "4000"),
            (unsigned, 401, "4010"),
        ]:
            assert (response.status_code, response.json()["code"]) == (status, code)
            validate(response.json(), response_schema(str(status)))

    async def test_unknown_project_is_not_found(
        self, simulator: ServedApp, http: httpx.AsyncClient
    ) -> None:
        with pytest.raises(NotFound) as caught:
            await self.make_client(simulator.url, http).fetch_project(UNKNOWN_CODE)

        assert caught.value.context["platform_code"] == "4004"

    async def test_a_malformed_project_code_never_reaches_the_platform(
        self, simulator: ServedApp, http: httpx.AsyncClient, control: SimulatorControl
    ) -> None:
        with pytest.raises(InvalidInput) as caught:
            await self.make_client(simulator.url, http).fetch_project("2020-310115/../admin")

        assert caught.value.field == "project_code"
        assert not control.received
