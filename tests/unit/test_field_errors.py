"""Field names travel as attributes (``FieldError``), never inside a message to be parsed;
China time is one module that refuses naive datetimes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.marketing.mapping import notice_request
from adapters.permit.mapping import data_from_filing, decision_from_callback
from adapters.project.mapping import project_from_data
from adapters.ywtb.mapping import callback_body, case_from_callback, status_body
from gateway.api.flows import _parsed
from gateway.cases import application_request
from schemas.cases import CaseStatusUpdate, InboundCase, MarketingNotice, Stage
from schemas.chinatime import (
    CHINA_STANDARD_TIME,
    format_platform_time,
    in_china_time,
    parse_platform_time,
)
from schemas.errors import FieldError, InvalidInput
from schemas.permits import PermitFiling

CASE = InboundCase(
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
    filed_at=datetime(2024, 5, 6, 2, 15, tzinfo=UTC),
)
NAIVE = datetime(2024, 5, 6, 9, 30)


def test_a_field_error_is_a_value_error_with_its_field_and_reason() -> None:
    error = FieldError("RL", "not a positive number: 0")

    assert isinstance(error, ValueError)
    assert (error.field, error.reason) == ("RL", "not a positive number: 0")


@pytest.mark.parametrize(
    ("read", "field"),
    [
        (lambda: case_from_callback({**callback_body(CASE), "RL": 0}), "RL"),
        (lambda: case_from_callback({**callback_body(CASE), "SBSJ": "2024-05-06"}), "SBSJ"),
        (lambda: decision_from_callback({"SLBH": "ZJL1", "GLYWH": "A", "SPJG": "9"}), "SPJG"),
        (lambda: data_from_filing(PermitFiling(filing_no="ZJL1", filed_at=NAIVE)), "filed_at"),
        (lambda: project_from_data({"SPLX": "09"}), "SPLX"),
        (lambda: status_body(_update(occurred_at=NAIVE)), "occurred_at"),
        (lambda: status_body(_update(stage=Stage.REFUSED)), "reason"),
        (lambda: notice_request(_notice(occurred_at=NAIVE)), "occurred_at"),
    ],
)
def test_every_mapping_names_the_field_it_cannot_read_or_write(read: Any, field: str) -> None:
    with pytest.raises(FieldError) as caught:
        read()

    assert caught.value.field == field
    assert caught.value.reason


def test_a_callback_that_cannot_be_read_is_invalid_input_naming_the_platform_field() -> None:
    with pytest.raises(InvalidInput) as caught:
        _parsed(case_from_callback, {**callback_body(CASE), "XZQH": "3101"})

    assert caught.value.field == "XZQH"
    assert caught.value.reason == "not a 6-digit division code: '3101'"


def test_a_case_the_rules_refuse_is_invalid_input_naming_the_request_field() -> None:
    with pytest.raises(InvalidInput) as caught:
        application_request(CASE.model_copy(update={"capacity_kva": 20.0}))

    assert caught.value.field == "request.capacity_kva"
    assert caught.value.reason == "Input should be greater than or equal to 50"  # 10 kV band


def test_china_time_is_utc_plus_eight_both_ways() -> None:
    moment = datetime(2024, 5, 6, 1, 30, 1, tzinfo=UTC)

    assert format_platform_time(moment, "at") == "2024-05-06 09:30:01"
    assert parse_platform_time("2024-05-06 09:30:01", "at") == moment
    assert in_china_time(moment, "at").utcoffset() == CHINA_STANDARD_TIME.utcoffset(None)


@pytest.mark.parametrize(
    "use",
    [
        lambda: in_china_time(NAIVE, "at"),
        lambda: format_platform_time(NAIVE, "at"),
        lambda: parse_platform_time("2024-05-06T09:30:01", "at"),
        lambda: parse_platform_time(None, "at"),
    ],
)
def test_a_naive_or_unreadable_time_is_refused_naming_the_field(use: Any) -> None:
    with pytest.raises(FieldError) as caught:
        use()

    assert caught.value.field == "at"


def _update(*, occurred_at: datetime | None = None, stage: Stage = Stage.ACCEPTED) -> Any:
    return CaseStatusUpdate(
        event_id="evt-1",
        case_no=CASE.case_no,
        application_id="app-1",
        seq=1,
        stage=stage,
        handler="客户服务中心",
        occurred_at=occurred_at or datetime(2024, 5, 6, 1, 30, tzinfo=UTC),
    )


def _notice(*, occurred_at: datetime) -> MarketingNotice:
    return MarketingNotice(
        event_id="evt-1",
        kind="permit_decision",
        application_id="app-1",
        occurred_at=occurred_at,
        payload={},
    )
