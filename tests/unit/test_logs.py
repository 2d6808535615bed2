"""Log lines are JSON, carry the request id, and never show a resident ID or mobile number."""

from __future__ import annotations

import json
import logging

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

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
