"""一证办电 end to end: the API over loopback, the simulators, the store and the topic."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from gateway.bootstrap import Container
from gateway.bus import record_to_event
from gateway.store.models import Application, IdempotencyKey, OutboxRow
from schemas.events import APPLICATION_EVENTS, ApplicationEvent
from tests.integration.conftest import Platform
from tests.kafka import read_topic
from tests.running import eventually, running

LINGANG = "91310115MA1HW74707"  # active; owns the 核准 project below
LINGANG_PROJECT = "2020-310115-44-02-000077"
JINGAN = "91310106MA1FP5221E"  # active, low-voltage small business, no project
REVOKED = "91310113MA1GT8791M"  # 吊销
EXPIRED = "91310117MA1J51014Q"  # licence validity ended 2023-06-30
JINSHAN = "91310116MA1HB39777"  # active; its project below is revoked
JINSHAN_PROJECT = "2019-310116-26-02-002611"
UNKNOWN = "91310107MA1FR42114"  # valid check character, not in the licence library
QINGPU = "91310118MA1K4A7275"  # active; the platform holds its project under a former name
QINGPU_PROJECT = "2021-310118-72-03-000318"


def body(
    credential: str = LINGANG,
    *,
    credential_type: str = "uscc",
    voltage: str = "35kV",
    capacity: float = 12000,
    project: str | None = LINGANG_PROJECT,
    district: str = "310115",
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "applicant": {"credential_type": credential_type, "credential_no": credential},
        "site": {"address": "上海市浦东新区环湖西二路888号", "district_code": district},
        "request": {
            "business_type": "new_connection",
            "voltage_level": voltage,
            "capacity_kva": capacity,
        },
    }
    if project:
        payload["project_code"] = project
    return payload


def low_voltage(credential: str) -> dict[str, Any]:
    return body(credential, voltage="0.4kV", capacity=100, project=None, district="310106")


async def count(connector: Container, model: type[Any]) -> int:
    async with connector.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_one_credential_gives_a_ready_dossier_with_licence_and_project(
    api: httpx.AsyncClient, connector: Container
) -> None:
    response = await api.post("/api/v1/applications", json=body())

    assert response.status_code == 201, response.text
    application = response.json()
    assert application["status"] == "ready"
    assert application["reasons"] == []
    assert [p["name"] for p in application["procedures"]] == [
        "申请受理",
        "现场勘查及供电方案答复",
        "外部工程实施",
        "装表接电",
    ]
    evidence = {e["kind"]: e for e in application["evidence"]}
    licence, project = evidence["licence"], evidence["project"]
    assert licence["status"] == "fetched"
    assert licence["fields"]["name"] == "上海临港绿能储能科技有限公司"
    assert licence["fields"]["registration_status"] == "active"
    assert licence["source_platform"].startswith("电子证照库")
    assert licence["document_no"] and licence["issuing_authority"] and licence["fetched_at"]
    assert project["document_no"] == "沪发改能源〔2020〕77号"
    assert project["fields"]["approval_type"] == "authorisation"
    assert project["fields"]["owner_uscc"] == LINGANG
    assert response.headers["location"] == f"/api/v1/applications/{application['id']}"

    again = await api.get(f"/api/v1/applications/{application['id']}")
    assert again.status_code == 200

    def settled(resource: dict[str, Any]) -> dict[str, Any]:
        """The resource less its clock, which is computed at each request."""
        return {k: v for k, v in resource.items() if k != "deadline"}

    assert settled(again.json()) == settled(application)
    assert again.json()["deadline"]["due_at"] == application["deadline"]["due_at"]


async def test_events_of_a_ready_dossier_reach_the_topic(
    api: httpx.AsyncClient, connector: Container
) -> None:
    application = (await api.post("/api/v1/applications", json=body())).json()

    async with running(connector):
        records = await read_topic(
            connector.settings.kafka.bootstrap or "", APPLICATION_EVENTS, expect=4
        )

    events = [record_to_event(r) for r in records]
    assert {r.key for r in records} == {application["id"].encode()}
    assert [e.get_type() for e in events] == [
        ApplicationEvent.RECEIVED,
        ApplicationEvent.EVIDENCE_FETCHED,
        ApplicationEvent.EVIDENCE_FETCHED,
        ApplicationEvent.DOSSIER_COMPLETED,
    ]
    assert events[-1].get_data() == {
        "application_id": application["id"],
        "status": "ready",
        "reasons": [],
    }


async def test_a_slow_licence_library_leaves_the_licence_pending_then_completes_it(
    api: httpx.AsyncClient, connector: Container, platforms: dict[str, Platform]
) -> None:
    platforms["licence"].control.faults.latency_s = 2.5  # budget is 1 s

    response = await api.post("/api/v1/applications", json=body())

    assert response.status_code == 201
    application = response.json()
    assert application["status"] == "evidence_pending"
    statuses = {e["kind"]: e["status"] for e in application["evidence"]}
    assert statuses == {"licence": "pending", "project": "fetched"}

    async def ready() -> bool:
        current = await api.get(f"/api/v1/applications/{application['id']}")
        return bool(current.json()["status"] == "ready")

    async with running(connector, "evidence"):
        await eventually(ready, timeout_s=30)
        records = await read_topic(
            connector.settings.kafka.bootstrap or "", APPLICATION_EVENTS, expect=4
        )

    completed = [
        record_to_event(r)
        for r in records
        if record_to_event(r).get_type() == ApplicationEvent.DOSSIER_COMPLETED
    ]
    assert len(completed) == 1
    assert completed[0].get_data()["application_id"] == application["id"]  # type: ignore[index]
    final = (await api.get(f"/api/v1/applications/{application['id']}")).json()
    assert {e["kind"]: e["status"] for e in final["evidence"]} == {
        "licence": "fetched",
        "project": "fetched",
    }


async def test_a_second_application_reuses_the_stored_licence(
    api: httpx.AsyncClient, platforms: dict[str, Platform]
) -> None:
    first = await api.post("/api/v1/applications", json=low_voltage(JINGAN))
    second = await api.post("/api/v1/applications", json=low_voltage(JINGAN))

    assert first.status_code == second.status_code == 201
    assert first.json()["id"] != second.json()["id"]
    assert second.json()["status"] == "ready"
    assert platforms["licence"].control.calls["QueryLicence"] == 1
    licence = second.json()["evidence"][0]
    assert licence["fetched_at"] == first.json()["evidence"][0]["fetched_at"]


async def _rejected(api: httpx.AsyncClient, payload: dict[str, Any]) -> list[dict[str, Any]]:
    response = await api.post("/api/v1/applications", json=payload)
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "rejected"
    reasons: list[dict[str, Any]] = response.json()["reasons"]
    return reasons


async def test_revoked_and_expired_licences_are_rejected_with_readable_reasons(
    api: httpx.AsyncClient,
) -> None:
    revoked = await _rejected(api, low_voltage(REVOKED))
    assert [r["code"] for r in revoked] == ["licence_not_active"]
    assert "吊销" in revoked[0]["message"]

    expired = await _rejected(api, low_voltage(EXPIRED))
    assert [r["code"] for r in expired] == ["licence_expired"]
    assert "2023-06-30" in expired[0]["message"]

    unknown = await _rejected(api, low_voltage(UNKNOWN))
    assert [r["code"] for r in unknown] == ["licence_not_found"]
    assert UNKNOWN in unknown[0]["message"]


async def test_a_project_of_another_entity_or_revoked_is_rejected(api: httpx.AsyncClient) -> None:
    foreign = await _rejected(api, body(JINGAN, project=LINGANG_PROJECT))
    assert [r["code"] for r in foreign] == ["project_owner_mismatch"]
    assert LINGANG in foreign[0]["message"] and JINGAN in foreign[0]["message"]

    revoked = await _rejected(api, body(JINSHAN, project=JINSHAN_PROJECT, district="310116"))
    assert [r["code"] for r in revoked] == ["project_revoked"]
    assert "撤销" in revoked[0]["message"]


async def test_a_project_held_under_another_name_than_the_licence_is_a_name_mismatch(
    api: httpx.AsyncClient,
) -> None:
    mismatch = await _rejected(
        api, body(QINGPU, voltage="10kV", capacity=630, project=QINGPU_PROJECT, district="310118")
    )

    assert [r["code"] for r in mismatch] == ["name_mismatch"]
    assert "上海青浦国际会展服务有限公司" in mismatch[0]["message"]
    assert "上海青浦会展服务有限公司" in mismatch[0]["message"]


async def test_invalid_requests_are_422_problems_naming_the_field_and_store_nothing(
    api: httpx.AsyncClient, connector: Container, platforms: dict[str, Platform]
) -> None:
    wrong_check = body(LINGANG[:-1] + "8")
    cases = {
        "applicant.credential_no": wrong_check,
        "site.district_code": body(district="310199"),
        "request.capacity_kva": body(capacity=900_000),
        "project_code": body(project=None),
    }
    for field, payload in cases.items():
        response = await api.post("/api/v1/applications", json=payload)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["status"] == 422
        assert field in [e["field"] for e in problem["errors"]], problem
    assert "check character" in str(
        (await api.post("/api/v1/applications", json=wrong_check)).json()["errors"]
    )

    malformed = await api.post(
        "/api/v1/applications",
        content=b'{"applicant": {',
        headers={"Content-Type": "application/json"},
    )
    assert malformed.status_code == 422
    assert malformed.headers["content-type"] == "application/problem+json"

    assert await count(connector, Application) == 0
    assert await count(connector, OutboxRow) == 0
    assert sum(platforms["licence"].control.calls.values()) == 0


async def test_calls_without_a_valid_key_are_401_problems(
    api: httpx.AsyncClient, connector: Container
) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong-key"}):
        response = await api.post("/api/v1/applications", json=body(), headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["status"] == 401
    assert await count(connector, Application) == 0


async def test_an_idempotency_key_never_creates_a_second_application(
    api: httpx.AsyncClient, connector: Container
) -> None:
    headers = {"Idempotency-Key": "order-2026-0001"}
    first = await api.post("/api/v1/applications", json=body(), headers=headers)
    retry = await api.post("/api/v1/applications", json=body(), headers=headers)
    other = await api.post("/api/v1/applications", json=body(capacity=15000), headers=headers)

    assert first.status_code == 201
    assert retry.status_code == 200 and retry.headers["idempotent-replayed"] == "true"
    assert retry.json()["id"] == first.json()["id"]
    assert other.status_code == 422
    assert other.json()["errors"][0]["field"] == "Idempotency-Key"
    assert await count(connector, Application) == 1
    assert await count(connector, IdempotencyKey) == 1


async def test_a_resident_applies_with_the_identity_card_alone(api: httpx.AsyncClient) -> None:
    resident = low_voltage("11010519491231002X") | {
        "applicant": {"credential_type": "resident_id", "credential_no": "11010519491231002x"}
    }
    response = await api.post("/api/v1/applications", json=resident)

    assert response.status_code == 201, response.text
    application = response.json()
    assert application["status"] == "ready"
    assert application["evidence"] == []
    assert application["applicant"]["credential_no"] == "11010519491231002X"
    assert application["applicant_parts"]["birth_date"] == "1949-12-31"
    assert [p["name"] for p in application["procedures"]] == ["申请受理", "装表接电"]


async def test_evidence_endpoints_fetch_once_then_serve_from_the_store(
    api: httpx.AsyncClient, platforms: dict[str, Platform]
) -> None:
    first = await api.get(f"/api/v1/evidence/licences/{LINGANG.lower()}")
    second = await api.get(f"/api/v1/evidence/licences/{LINGANG}")
    project = await api.get(f"/api/v1/evidence/projects/{LINGANG_PROJECT}")

    assert first.status_code == second.status_code == project.status_code == 200
    assert first.json() == second.json()
    assert first.json()["fields"]["uscc"] == LINGANG
    assert platforms["licence"].control.calls["QueryLicence"] == 1
    assert project.json()["document_no"] == "沪发改能源〔2020〕77号"

    missing = await api.get(f"/api/v1/evidence/licences/{UNKNOWN}")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    bad = await api.get("/api/v1/evidence/licences/91310115MA1HW74708")
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "uscc"


async def test_a_down_platform_opens_its_circuit_which_readyz_reports(
    api: httpx.AsyncClient, platforms: dict[str, Platform]
) -> None:
    platforms["licence"].control.faults.down = True

    for _ in range(3):
        response = await api.post("/api/v1/applications", json=low_voltage(JINGAN))
        assert response.status_code == 201
        assert response.json()["status"] == "evidence_pending"

    ready = await api.get("/readyz")
    assert ready.status_code == 200, "a platform being down does not make the connector unready"
    platforms_state = ready.json()["checks"]["platforms"]
    assert platforms_state["licence"]["state"] == "open"
    assert platforms_state["project"]["state"] == "closed"
    assert len(platforms["licence"].control.received) == 5, "no call once the circuit is open"


async def test_the_request_id_is_echoed_and_named_in_problems(api: httpx.AsyncClient) -> None:
    ok = await api.get("/healthz", headers={"X-Request-ID": "marketing-7f3a"})
    problem = await api.post(
        "/api/v1/applications", json=body(district="310199"), headers={"X-Request-ID": "mk-42"}
    )
    generated = await api.get("/healthz")

    assert ok.headers["x-request-id"] == "marketing-7f3a"
    assert problem.headers["x-request-id"] == "mk-42"
    assert problem.json()["request_id"] == "mk-42"
    assert len(generated.headers["x-request-id"]) == 32
