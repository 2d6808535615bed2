"""The licence adapter against its simulator, over loopback HTTP.

Every byte crosses a real socket: zeep builds and signs the envelope, the
simulator parses and checks it, and the answers come back as SOAP 1.1.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from lxml import etree
from stdnum.cn import uscc as uscc_number

from adapters.licence.client import LicenceClient
from adapters.licence.errors import PLATFORM
from adapters.licence.mapping import SERVICE_PATH, WSDL_PATH
from adapters.licence.simulator import create_app
from adapters.simulation import ReceivedRequest, ServedApp, SimulatorControl
from contract_tests.base import SoapContract
from contract_tests.helpers import (
    SOAP11,
)
from contract_tests.helpers import wsdl_namespace as namespace_of
from schemas.errors import NotFound
from schemas.evidence import BusinessLicence, RegistrationStatus
from schemas.seed import load_seed

USERNAME = "ywtb-connector"
PASSWORD = "licence-test-secret"

WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
PASSWORD_TEXT = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
    "#PasswordText"
)

LINGANG = "91310115MA1HW74707"  # 存续, 长期, own issuing authority and issue date
QINGPU = "91310118MA1K4A7275"  # 在业, no optional licence fields in the seed
SONGJIANG = "91310117MA1J51014Q"  # business term ended 2023-06-30
UNKNOWN = "91310107MA1FR42114"  # valid check digit, not on the platform


def wsdl_namespace() -> str:
    return namespace_of(WSDL_PATH)


class TestLicenceContract(SoapContract):
    """The shared contract (``contract_tests/base.py``), for the licence library."""

    platform = PLATFORM
    operation = "QueryLicence"
    interface_file = WSDL_PATH
    service_path = SERVICE_PATH
    username = USERNAME
    password = PASSWORD
    client_type = LicenceClient

    def make_app(self, control: SimulatorControl, **options: Any) -> FastAPI:
        return create_app(load_seed(), username=USERNAME, password=PASSWORD, control=control)

    async def call(self, client: LicenceClient) -> BusinessLicence:
        return await client.fetch_licence(LINGANG, request_id="conv-0001")

    def check_result(self, result: BusinessLicence) -> None:
        assert result.uscc == LINGANG

    def check_operation_sent(self, request: ReceivedRequest, fields: dict[str, Any]) -> None:
        """The requester context travels with every query."""
        assert fields == {
            "TYSHXYDM": LINGANG,
            "QQXT": "ywtb-connector",
            "QQYY": "一证办电",
            "QQLSH": "conv-0001",
        }

    async def test_found_licence_maps_every_field(
        self, simulator: ServedApp, http: httpx.AsyncClient
    ) -> None:
        licence = await self.make_client(simulator.url, http).fetch_licence(LINGANG)

        assert licence == BusinessLicence(
            uscc=LINGANG,
            name="上海临港绿能储能科技有限公司",
            legal_representative="周建华",
            address="中国（上海）自由贸易试验区临港新片区新杨公路1800弄2号2385室",
            registration_status=RegistrationStatus.ACTIVE,
            licence_no=f"YYZZ{LINGANG}",
            issuing_authority="中国（上海）自由贸易试验区临港新片区市场监督管理局",
            issued_on=date(2021, 3, 9),
            valid_from=date(2019, 8, 16),
            valid_to=None,
        )

    async def test_missing_optional_seed_fields_get_their_defaults(
        self, simulator: ServedApp, http: httpx.AsyncClient
    ) -> None:
        licence = await self.make_client(simulator.url, http).fetch_licence(QINGPU)

        assert licence.licence_no == f"YYZZ{QINGPU}"
        assert licence.issuing_authority == "上海市市场监督管理局"
        assert licence.issued_on == licence.valid_from == date(2020, 1, 8)
        assert licence.valid_to == date(2040, 1, 7)

    @pytest.mark.parametrize(
        ("uscc", "word", "status"),
        [
            ("91310115MA1HW74707", "存续", RegistrationStatus.ACTIVE),
            ("91310104MA1GK3350C", "在业", RegistrationStatus.ACTIVE),
            ("91310113MA1GT8791M", "吊销", RegistrationStatus.REVOKED),
            ("91310109MA1H02843H", "注销", RegistrationStatus.CANCELLED),
            ("91310110MA1FY6792B", "迁出", RegistrationStatus.MOVED_OUT),
        ],
    )
    async def test_each_registration_status_word_maps_to_its_meaning(
        self, simulator: ServedApp, http: httpx.AsyncClient, uscc: str, word: str, status: str
    ) -> None:
        seeded = {licence.uscc: licence.status for licence in load_seed().licences}
        assert seeded[uscc] == word

        licence = await self.make_client(simulator.url, http).fetch_licence(uscc)

        assert licence.registration_status == status

    async def test_expired_licence_is_served_with_its_end_date(
        self, simulator: ServedApp, http: httpx.AsyncClient
    ) -> None:
        licence = await self.make_client(simulator.url, http).fetch_licence(SONGJIANG)

        assert licence.registration_status == RegistrationStatus.ACTIVE
        assert licence.valid_to == date(2023, 6, 30)

    async def test_each_call_gets_its_own_request_serial(
        self, simulator: ServedApp, http: httpx.AsyncClient, control: SimulatorControl
    ) -> None:
        client = self.make_client(simulator.url, http)
        await client.fetch_licence(LINGANG)
        await client.fetch_licence(LINGANG)

        ns = wsdl_namespace()
        serials = [
            etree.fromstring(request.body).findtext(f".//{{{ns}}}QQLSH")
            for request in control.received
        ]
        assert len(serials) == 2
        assert all(serials)
        assert serials[0] != serials[1]

    async def test_simulator_accepts_a_plain_text_password(
        self, simulator: ServedApp, http: httpx.AsyncClient
    ) -> None:
        ns = wsdl_namespace()
        envelope = f"""<soap:Envelope xmlns:soap="{SOAP11}" xmlns:wsse="{WSSE}" xmlns:l="{ns}">
          <soap:Header><wsse:Security><wsse:UsernameToken>
            <wsse:Username>{USERNAME}</wsse:Username>
            <wsse:Password Type="{PASSWORD_TEXT}">{PASSWORD}</wsse:Password>
          </wsse:UsernameToken></wsse:Security></soap:Header>
          <soap:Body><l:QueryLicence>
            <l:TYSHXYDM>{LINGANG}</l:TYSHXYDM><l:QQXT>manual</l:QQXT>
            <l:QQYY>一证办电</l:QQYY><l:QQLSH>manual-1</l:QQLSH>
          </l:QueryLicence></soap:Body></soap:Envelope>"""

        response = await http.post(
            f"{simulator.url}/ws/licence",
            content=envelope.encode(),
            headers={"Content-Type": "text/xml; charset=utf-8"},
        )

        assert response.status_code == 200
        answer = etree.fromstring(response.content)
        assert answer.findtext(f"{{{SOAP11}}}Body/{{{ns}}}QueryLicenceResponse/{{{ns}}}QYMC") == (
            "上海临港绿能储能科技有限公司"
        )

    async def test_unknown_credential_is_not_found_and_not_retried(
        self, simulator: ServedApp, http: httpx.AsyncClient, control: SimulatorControl
    ) -> None:
        with pytest.raises(NotFound) as caught:
            await self.make_client(simulator.url, http).fetch_licence(UNKNOWN)

        assert caught.value.context["platform_code"] == "E3001"
        assert control.calls["QueryLicence"] == 1


# --- the default seed ------------------------------------------------------

PROJECT_CODE = re.compile(r"(?P<year>\d{4})-(?P<division>31\d{4})-\d{2}-(?P<type>0[123])-\d{6}")
TYPE_OF_APPROVAL = {"审批": "01", "核准": "02", "备案": "03"}


def test_default_seed_credentials_have_valid_check_characters() -> None:
    seed = load_seed()

    usccs = [licence.uscc for licence in seed.licences]
    assert len(usccs) == len(set(usccs))
    assert [u for u in usccs if not uscc_number.is_valid(u)] == []
    assert all(u[2:4] == "31" for u in usccs)  # registered in Shanghai
    assert {licence.status for licence in seed.licences} == {"存续", "在业", "吊销", "注销", "迁出"}
    assert any(licence.valid_to is None for licence in seed.licences)
    assert any(licence.valid_to and licence.valid_to < date.today() for licence in seed.licences)


def test_default_seed_project_codes_match_their_approval_type_and_owner() -> None:
    seed = load_seed()
    active = {licence.uscc for licence in seed.licences if licence.status in ("存续", "在业")}

    assert {project.approval_type for project in seed.projects} == set(TYPE_OF_APPROVAL)
    assert any(project.status == "revoked" for project in seed.projects)
    for project in seed.projects:
        match = PROJECT_CODE.fullmatch(project.project_code)
        assert match, project.project_code
        assert match["type"] == TYPE_OF_APPROVAL[project.approval_type], project.project_code
        assert project.owner_uscc in active, project.project_code
