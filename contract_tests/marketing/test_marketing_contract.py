"""The marketing adapter against its simulator, over loopback HTTP.

zeep builds and signs the ReceiveNotice envelope, the simulator parses and
checks it and records what it applied; answers come back as SOAP 1.1.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from lxml import etree

from adapters.marketing.client import MarketingClient
from adapters.marketing.errors import PLATFORM
from adapters.marketing.mapping import SERVICE_PATH, WSDL_PATH
from adapters.marketing.simulator import create_app
from adapters.simulation import ReceivedRequest, ServedApp, SimulatorControl
from contract_tests.base import SoapContract
from contract_tests.helpers import wsdl_namespace as namespace_of
from schemas.cases import MarketingNotice
from schemas.errors import InvalidInput, PlatformRejected, Unauthorized

USERNAME = "ywtb-connector"
PASSWORD = "marketing-test-secret"


def notice(
    event_id: str = "evt-0001",
    kind: str = "permit_decision",
    *,
    occurred_at: datetime = datetime(2024, 5, 6, 1, 30, tzinfo=UTC),
    payload: dict[str, Any] | None = None,
) -> MarketingNotice:
    return MarketingNotice(
        event_id=event_id,
        kind=kind,
        application_id="app-0001",
        occurred_at=occurred_at,
        payload={"permit_no": "浦东道路〔2024〕第118号", "valid_to": date(2024, 8, 31)}
        if payload is None
        else payload,
    )


class TestMarketingContract(SoapContract):
    """The shared contract (``contract_tests/base.py``), for the marketing system."""

    platform = PLATFORM
    operation = "ReceiveNotice"
    interface_file = WSDL_PATH
    service_path = SERVICE_PATH
    username = USERNAME
    password = PASSWORD
    client_type = MarketingClient

    def make_app(self, control: SimulatorControl, **options: Any) -> FastAPI:
        """A fresh marketing system: nothing applied, nothing rejected."""
        return create_app(username=USERNAME, password=PASSWORD, control=control)

    async def call(self, client: MarketingClient) -> None:
        await client.notify(notice())

    def check_operation_sent(self, request: ReceivedRequest, fields: dict[str, Any]) -> None:
        """The notice is a ReceiveNotice with its SOAPAction, its time in China time."""
        assert request.headers["soapaction"] == '"http://yx.sgcc.sh/ws/notice/ReceiveNotice"'
        assert fields == {
            "TZID": "evt-0001",
            "TZLX": "permit_decision",
            "SQBH": "app-0001",
            "FSSJ": "2024-05-06T09:30:00+08:00",
            "NR": '{"permit_no":"浦东道路〔2024〕第118号","valid_to":"2024-08-31"}',
        }

    async def check_applied_once(self, http: httpx.AsyncClient, simulator: ServedApp) -> None:
        answer = await recorded(http, simulator)
        assert [n["TZID"] for n in answer["notices"]] == ["evt-0001"]
        assert answer["counts"] == {"evt-0001": 1}

    async def check_refused_credential(
        self, error: Exception, http: httpx.AsyncClient, simulator: ServedApp
    ) -> None:
        assert isinstance(error, Unauthorized)
        assert error.context["platform_code"] == "E1001"
        assert (await recorded(http, simulator))["notices"] == []

    async def check_after_replay(self, http: httpx.AsyncClient, simulator: ServedApp) -> None:
        assert (await recorded(http, simulator))["counts"] == {"evt-0001": 1}

    async def test_notices_are_recorded_in_arrival_order(
        self, simulator: ServedApp, http: httpx.AsyncClient
    ) -> None:
        client = self.make_client(simulator.url, http)
        await client.notify(notice("evt-1", "case_received", payload={"case_no": "SH-1"}))
        await client.notify(notice("evt-2", "stage_changed", payload={"stage": "accepted"}))
        await client.notify(notice("evt-3", "permit_decision"))

        answer = await recorded(http, simulator)
        assert [(n["TZID"], n["TZLX"]) for n in answer["notices"]] == [
            ("evt-1", "case_received"),
            ("evt-2", "stage_changed"),
            ("evt-3", "permit_decision"),
        ]
        assert json.loads(answer["notices"][1]["NR"]) == {"stage": "accepted"}
        assert answer["counts"] == {"evt-1": 1, "evt-2": 1, "evt-3": 1}

    async def test_a_repeated_notice_is_accepted_counted_and_applied_once(
        self, simulator: ServedApp, control: SimulatorControl
    ) -> None:
        results: list[str | None] = []

        async def read_result(response: httpx.Response) -> None:
            await response.aread()
            results.append(etree.fromstring(response.content).findtext(f".//{{{ns}}}JG"))

        ns = wsdl_namespace()
        async with httpx.AsyncClient(event_hooks={"response": [read_result]}) as http:
            client = self.make_client(simulator.url, http)
            await client.notify(notice("evt-dup"))
            await client.notify(notice("evt-dup"))

        assert results == ["0", "1"], "已接收, then 重复通知（已接收）"
        assert control.calls["ReceiveNotice"] == 2
        async with httpx.AsyncClient() as http:
            answer = await recorded(http, simulator)
        assert [n["TZID"] for n in answer["notices"]] == ["evt-dup"]
        assert answer["counts"] == {"evt-dup": 2}

    async def test_a_notice_without_a_time_zone_never_leaves(
        self, simulator: ServedApp, http: httpx.AsyncClient, control: SimulatorControl
    ) -> None:
        with pytest.raises(InvalidInput) as caught:
            await self.make_client(simulator.url, http).notify(
                notice(occurred_at=datetime(2024, 5, 6, 9, 30))
            )

        assert caught.value.field == "occurred_at"
        assert not control.received

    async def test_a_rejected_kind_is_platform_rejected_and_not_retried(
        self, simulator: ServedApp, http: httpx.AsyncClient, control: SimulatorControl
    ) -> None:
        put = await http.put(f"{simulator.url}/_admin/reject", json=["permit_decision"])
        assert put.json() == ["permit_decision"]
        client = self.make_client(simulator.url, http)

        with pytest.raises(PlatformRejected) as caught:
            await client.notify(notice("evt-refused", "permit_decision"))
        await client.notify(notice("evt-other", "stage_changed"))

        assert caught.value.platform == "marketing"
        assert caught.value.platform_code == "2"
        assert "permit_decision" in caught.value.detail
        answer = await recorded(http, simulator)
        assert [n["TZID"] for n in answer["notices"]] == ["evt-other"]
        assert answer["counts"] == {"evt-refused": 1, "evt-other": 1}

        cleared = await http.delete(f"{simulator.url}/_admin/reject")
        assert cleared.status_code == 204
        await client.notify(notice("evt-refused", "permit_decision"))
        assert [n["TZID"] for n in (await recorded(http, simulator))["notices"]] == [
            "evt-other",
            "evt-refused",
        ]


async def recorded(http: httpx.AsyncClient, simulator: ServedApp) -> dict[str, Any]:
    response = await http.get(f"{simulator.url}/_admin/notices")
    assert response.status_code == 200
    answer: dict[str, Any] = response.json()
    return answer


def wsdl_namespace() -> str:
    return namespace_of(WSDL_PATH)
