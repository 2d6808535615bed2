"""The project adapter against its simulator over loopback HTTP, and the simulator
against the platform's interface file (``adapters/project/openapi.yaml``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import date
from typing import Any

import httpx
import jsonschema
import pytest
from stdnum.cn import uscc

from adapters.project.client import ProjectClient
from adapters.project.simulator import OPENAPI_FILE, create_app
from adapters.resilience import BreakerState, CircuitBreaker
from adapters.signing import sign_request, verify_request
from adapters.simulation import Faults, ServedApp, SimulatorControl
from contract_tests.helpers import openapi
from contract_tests.helpers import response_schema as answer_schema
from contract_tests.helpers import validate_draft4 as validate
from schemas.errors import InvalidInput, NotFound, PlatformUnavailable, Unauthorized
from schemas.evidence import ApprovalType, ProjectApproval, ProjectStatus
from schemas.seed import Seed

APP_KEY = "ywtb-sgcc-sh"
APP_SECRET = "contract-test-secret"
ATTEMPTS = 3

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


def lookup(app_id: str) -> str | None:
    return APP_SECRET if app_id == APP_KEY else None


@pytest.fixture(scope="module")
def control() -> SimulatorControl:
    return SimulatorControl()


@pytest.fixture(scope="module")
def served(control: SimulatorControl) -> Iterator[ServedApp]:
    app = create_app(SEED, app_id=APP_KEY, app_secret=APP_SECRET, control=control)
    with ServedApp(app) as served:
        yield served


@pytest.fixture(autouse=True)
def fresh_control(control: SimulatorControl) -> None:
    """The module's simulator is shared: each test starts without faults or records."""
    control.faults = Faults()
    control.reset()


def client_for(
    served: ServedApp,
    http: httpx.AsyncClient,
    *,
    secret: str = APP_SECRET,
    timeout_s: float = 2.0,
    algorithm: str = "hmac-sha256",
    breaker: CircuitBreaker | None = None,
) -> ProjectClient:
    return ProjectClient(
        http=http,
        base_url=served.url,
        app_id=APP_KEY,
        app_secret=secret,
        algorithm=algorithm,
        timeout_s=timeout_s,
        attempts=ATTEMPTS,
        breaker=breaker,
    )


def response_schema(status: str) -> dict[str, Any]:
    """The JSON schema of an answer with this status, resolvable on its own."""
    return answer_schema(openapi(OPENAPI_FILE), "/api/v1/projects/{XMDM}", "get", status)


async def signed_get(http: httpx.AsyncClient, served: ServedApp, path: str) -> httpx.Response:
    headers = sign_request("GET", path, b"", app_id=APP_KEY, secret=APP_SECRET)
    return await http.get(served.url + path, headers=headers)


def test_seed_usccs_carry_valid_check_characters() -> None:
    assert all(uscc.is_valid(code) for code in (SOLAR_USCC, MOTOR_USCC, DEPOT_USCC))


@pytest.mark.parametrize("project_code", sorted(EXPECTED))
async def test_each_approval_type_and_status_maps_right(
    served: ServedApp, http: httpx.AsyncClient, project_code: str
) -> None:
    project = await client_for(served, http).fetch_project(project_code)

    assert project == EXPECTED[project_code]


@pytest.mark.parametrize("algorithm", ["hmac-sha256", "hmac-sm3"])
async def test_the_request_carries_a_signature_that_verifies_with_the_shared_secret(
    http: httpx.AsyncClient, algorithm: str
) -> None:
    control = SimulatorControl()
    app = create_app(
        SEED, app_id=APP_KEY, app_secret=APP_SECRET, algorithm=algorithm, control=control
    )
    with ServedApp(app) as served:
        project = await client_for(served, http, algorithm=algorithm).fetch_project(
            "2020-310115-44-01-000001"
        )

    assert project.approval_type is ApprovalType.APPROVAL
    (received,) = control.received
    assert received.method == "GET"
    assert received.path == "/api/v1/projects/2020-310115-44-01-000001"
    assert received.headers["x-app-id"] == APP_KEY
    assert received.headers["x-sign-alg"] == algorithm
    assert abs(int(received.headers["x-timestamp"]) - time.time() * 1000) < 60_000
    assert received.headers["x-nonce"]
    app_id = verify_request(
        received.method,
        received.path,
        received.body,
        received.headers,
        lookup_secret=lookup,
        allowed_algorithms={algorithm},
    )
    assert app_id == APP_KEY


@pytest.mark.parametrize("project_code", sorted(EXPECTED))
async def test_simulator_answers_validate_against_openapi(
    served: ServedApp, http: httpx.AsyncClient, project_code: str
) -> None:
    response = await signed_get(http, served, f"/api/v1/projects/{project_code}")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    validate(response.json(), response_schema("200"))
    assert response.json()["data"]["XMDM"] == project_code


async def test_simulator_errors_validate_against_openapi(
    served: ServedApp, http: httpx.AsyncClient
) -> None:
    missing = await signed_get(http, served, f"/api/v1/projects/{UNKNOWN_CODE}")
    malformed = await signed_get(http, served, "/api/v1/projects/not-a-code")
    unsigned = await http.get(f"{served.url}/api/v1/projects/{UNKNOWN_CODE}")

    for response, status, code in [
        (missing, 404, "4004"),
        (malformed, 400, "4000"),
        (unsigned, 401, "4010"),
    ]:
        assert (response.status_code, response.json()["code"]) == (status, code)
        validate(response.json(), response_schema(str(status)))


async def test_simulator_serves_its_interface_file(
    served: ServedApp, http: httpx.AsyncClient
) -> None:
    response = await http.get(f"{served.url}/openapi.yaml")

    assert response.status_code == 200
    assert response.text == OPENAPI_FILE.read_text(encoding="utf-8")
    jsonschema.Draft4Validator.check_schema(response_schema("200"))


async def test_unknown_project_is_not_found(served: ServedApp, http: httpx.AsyncClient) -> None:
    with pytest.raises(NotFound) as caught:
        await client_for(served, http).fetch_project(UNKNOWN_CODE)

    assert caught.value.context["platform_code"] == "4004"


async def test_a_malformed_project_code_never_reaches_the_platform(
    served: ServedApp, http: httpx.AsyncClient, control: SimulatorControl
) -> None:
    with pytest.raises(InvalidInput) as caught:
        await client_for(served, http).fetch_project("2020-310115/../admin")

    assert caught.value.field == "project_code"
    assert not control.received


async def test_wrong_secret_is_unauthorized_and_not_retried(
    served: ServedApp, http: httpx.AsyncClient, control: SimulatorControl
) -> None:
    with pytest.raises(Unauthorized) as caught:
        await client_for(served, http, secret="not-the-secret").fetch_project(
            "2020-310115-44-01-000001"
        )

    assert caught.value.code == "bad_signature"
    assert control.calls["GetProject"] == 1


async def test_a_replayed_nonce_is_refused(
    served: ServedApp, http: httpx.AsyncClient, control: SimulatorControl
) -> None:
    path = "/api/v1/projects/2020-310115-44-01-000001"
    headers = sign_request("GET", path, b"", app_id=APP_KEY, secret=APP_SECRET)

    first = await http.get(served.url + path, headers=headers)
    replay = await http.get(served.url + path, headers=headers)

    assert (first.status_code, first.json()["code"]) == (200, "0000")
    assert (replay.status_code, replay.json()["code"]) == (401, "4012")
    assert control.calls["GetProject"] == 2


async def test_a_stale_timestamp_is_refused(served: ServedApp, http: httpx.AsyncClient) -> None:
    path = "/api/v1/projects/2020-310115-44-01-000001"
    headers = sign_request(
        "GET", path, b"", app_id=APP_KEY, secret=APP_SECRET, now=time.time() - 3600
    )

    response = await http.get(served.url + path, headers=headers)

    assert (response.status_code, response.json()["code"]) == (401, "4011")


async def test_platform_down_is_unavailable_after_every_attempt(
    served: ServedApp, http: httpx.AsyncClient, control: SimulatorControl
) -> None:
    control.faults = Faults(down=True)

    with pytest.raises(PlatformUnavailable):
        await client_for(served, http).fetch_project("2020-310115-44-01-000001")

    assert len(control.received) == ATTEMPTS
    nonces = {r.headers["x-nonce"] for r in control.received}
    assert len(nonces) == ATTEMPTS, "every retry is signed afresh"


async def test_an_open_breaker_stops_calling_a_platform_that_is_down(
    served: ServedApp, http: httpx.AsyncClient, control: SimulatorControl
) -> None:
    control.faults = Faults(down=True)
    breaker = CircuitBreaker("project", failure_threshold=2, reset_timeout_s=60.0)
    client = client_for(served, http, breaker=breaker)
    assert client.breaker is breaker

    with pytest.raises(PlatformUnavailable):
        await client.fetch_project("2020-310115-44-01-000001")

    assert len(control.received) == 2, "the third attempt failed fast"
    assert breaker.state is BreakerState.OPEN
    assert breaker.snapshot()["consecutive_failures"] == 2

    with pytest.raises(PlatformUnavailable) as caught:
        await client.fetch_project("2020-310115-44-01-000001")

    assert "circuit open" in caught.value.detail
    assert len(control.received) == 2, "no further request reached the platform"


async def test_each_client_has_a_breaker_of_its_own(
    served: ServedApp, http: httpx.AsyncClient
) -> None:
    first, second = client_for(served, http), client_for(served, http)

    assert first.breaker is not second.breaker
    assert first.breaker.platform == "project"
    assert first.breaker.state is BreakerState.CLOSED


async def test_latency_beyond_the_timeout_is_unavailable(http: httpx.AsyncClient) -> None:
    # A simulator of its own: the slow answers outlive the test and must not be counted elsewhere.
    control = SimulatorControl(faults=Faults(latency_s=1.0))
    app = create_app(SEED, app_id=APP_KEY, app_secret=APP_SECRET, control=control)
    with ServedApp(app) as served:
        with pytest.raises(PlatformUnavailable) as caught:
            await client_for(served, http, timeout_s=0.2).fetch_project("2020-310115-44-01-000001")

        assert "timed out" in caught.value.detail
        assert len(control.received) == ATTEMPTS


async def test_injected_errors_then_recovery_succeeds(
    served: ServedApp, http: httpx.AsyncClient, control: SimulatorControl
) -> None:
    control.faults = Faults(error_rate=1.0)
    fetch = asyncio.create_task(client_for(served, http).fetch_project("2020-310115-44-01-000001"))
    for _ in range(500):  # until the first attempt failed and the retry is on the wire
        if len(control.received) >= 2:
            break
        await asyncio.sleep(0.01)
    control.faults = Faults()

    project = await fetch

    assert project == EXPECTED["2020-310115-44-01-000001"]
    assert control.calls["GetProject"] == 1, "only the last attempt got past the injected errors"
    assert len(control.received) >= 2
