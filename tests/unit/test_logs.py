"""Log lines are JSON, carry the request id, and never show a resident ID or mobile number."""

from __future__ import annotations

import json
import logging

from gateway.logs import JsonFormatter, mask, request_id


def test_resident_ids_and_mobiles_are_masked_but_firm_codes_are_not() -> None:
    line = "申请人 11010519491231002X 电话 13812345678 企业 91310115MA1HW74707"

    masked = mask(line)

    assert "11010519491231002X" not in masked and "110105***********X" in masked
    assert "13812345678" not in masked and "138****5678" in masked
    assert "91310115MA1HW74707" in masked


def test_a_log_record_becomes_one_json_line_with_request_id_and_extras() -> None:
    record = logging.makeLogRecord(
        {
            "name": "gateway.test",
            "levelno": logging.INFO,
            "levelname": "INFO",
            "msg": "applicant %s",
            "args": ("310101199003071236",),
            "worker": "timeline",
        }
    )
    token = request_id.set("req-1")
    try:
        line = JsonFormatter().format(record)
    finally:
        request_id.reset(token)

    entry = json.loads(line)
    assert entry["msg"] == "applicant 310101***********6"
    assert entry["request_id"] == "req-1"
    assert entry["worker"] == "timeline"
    assert entry["level"] == "INFO" and entry["logger"] == "gateway.test"
