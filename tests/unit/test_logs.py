"""Log lines are JSON, carry the request id, and never show a resident ID or mobile number."""

from __future__ import annotations

import io
import json
import logging

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from gateway.logs import JsonFormatter, install_mask, mask, request_id


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


def test_a_log_line_in_a_trace_carries_its_trace_and_span_ids_unmasked() -> None:
    # The trace id holds 13812345678, which the mask would take for a mobile number.
    trace_id, span_id = "aa13812345678bbbbbbbbbbbbbbbbbbb", "00f067aa0ba902b7"
    span = NonRecordingSpan(
        SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(1))
    )
    record = logging.makeLogRecord({"name": "gateway.test", "msg": "call 13812345678"})

    with trace.use_span(span):
        inside = json.loads(JsonFormatter().format(record))
    outside = json.loads(JsonFormatter().format(record))

    assert inside["trace_id"] == trace_id and inside["span_id"] == span_id
    assert inside["msg"] == "call 138****5678"
    assert "trace_id" not in outside and "span_id" not in outside


MASK_CASES = [
    # (what a log line held, what must be gone, what the masked line shows)
    ("11010519491231002X", "11010519491231002X", "110105***********X"),
    ("id 110105 19491231 002X.", "19491231", "110105***********X"),
    ("id 110105-19491231-002x", "19491231", "110105***********X"),
    ("id 110105 1949 1231 002X", "1949 1231", "110105***********X"),
    ("证件号：１１０１０５１９４９１２３１００２Ｘ", "１９４９１２３１", "110105***********X"),
    ("旧证 110105491231002 号", "110105491231002", "110105********2"),
    ("tel 13812345678", "13812345678", "138****5678"),
    ("tel +86 138 1234 5678", "1234 5678", "+86 138****5678"),
    ("tel +8613812345678", "8613812345678", "+86138****5678"),
    ("tel 0086-13812345678", "13812345678", "0086-138****5678"),
    ("tel 138-1234-5678", "1234-5678", "138****5678"),
    ("tel １３８１２３４５６７８", "１２３４５６７８", "138****5678"),
]

NOT_PERSONAL = [
    "企业 91310115MA1HW74707",  # a credit code is public
    "event at 1718000000000 ms",  # 13 digits
    "order 123456789012345678",  # 18 digits, no birth date inside
    "project 2020-310115-44-03-000001",
]


@pytest.mark.parametrize(("line", "gone", "shown"), MASK_CASES)
def test_every_variant_of_a_resident_id_or_mobile_is_masked(
    line: str, gone: str, shown: str
) -> None:
    masked = mask(line)

    assert gone not in masked
    assert shown in masked


@pytest.mark.parametrize("line", NOT_PERSONAL)
def test_what_is_not_personal_stays(line: str) -> None:
    assert mask(line) == line


def test_a_traceback_is_masked_on_every_logger_uvicorn_included() -> None:
    install_mask()
    # A handler configured afterwards, as uvicorn's dictConfig does, with its own formatter.
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    logger = logging.getLogger("uvicorn.error")
    saved = logger.handlers[:], logger.propagate
    logger.handlers[:] = [handler]
    logger.propagate = False
    try:
        try:
            raise ValueError("bad applicant 11010519491231002X, tel +86 13812345678")
        except ValueError:
            logger.exception("Exception in ASGI application for %s", "110105-19491231-002X")
    finally:
        logger.handlers[:], logger.propagate = saved

    output = stream.getvalue()
    assert "Traceback" in output and "ValueError" in output
    assert "19491231" not in output and "13812345678" not in output
    assert output.count("110105***********X") >= 2 and "+86 138****5678" in output
