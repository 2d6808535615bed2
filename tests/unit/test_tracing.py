"""The trace context: into an outbound request, out of a Kafka event, into the next event."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cloudevents.core.v1.event import CloudEvent
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from pydantic import ValidationError

from gateway.api.problems import install_problem_handlers
from gateway.logs import JsonFormatter
from gateway.settings import TracingSettings, load_settings
from gateway.tracing import (
    configure_tracing,
    consuming,
    current_ids,
    current_traceparent,
    instrument_http,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{SPAN_ID}-01"


def _remote_span() -> NonRecordingSpan:
    return NonRecordingSpan(
        SpanContext(int(TRACE_ID, 16), int(SPAN_ID, 16), is_remote=True, trace_flags=TraceFlags(1))
    )


async def test_outbound_requests_carry_the_current_traceparent_and_none_outside_a_trace() -> None:
    seen: list[str | None] = []

    def platform(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("traceparent"))
        return httpx.Response(200)

    async with instrument_http(httpx.AsyncClient(transport=httpx.MockTransport(platform))) as http:
        instrument_http(http)  # a second time adds nothing
        with trace.use_span(_remote_span()):
            await http.get("http://platform.invalid/")
        await http.get("http://platform.invalid/")

    assert seen == [TRACEPARENT, None]
    assert len(http.event_hooks["request"]) == 1


def test_a_worker_continues_the_trace_its_event_came_with() -> None:
    configure_tracing(TracingSettings())
    event = CloudEvent(
        {
            "id": "e-1",
            "source": "/ywtb-connector",
            "type": "cn.sgcc.sh.ywtb.application.received",
            "time": datetime.now(UTC),
            "traceparent": TRACEPARENT,
        },
        {},
    )

    with consuming(event, "evidence"):
        ids = current_ids()
        written = current_traceparent()

    assert ids is not None
    trace_id, span_id = ids
    assert trace_id == TRACE_ID
    assert span_id != SPAN_ID, "the worker's own span, a child of the sender's"
    assert written == f"00-{TRACE_ID}-{span_id}-01", "what the worker writes carries it on"
    assert current_ids() is None


def test_an_event_without_trace_context_starts_a_trace() -> None:
    configure_tracing(TracingSettings())
    event = CloudEvent(
        {"id": "e-2", "source": "/ywtb-connector", "type": "t", "time": datetime.now(UTC)}, {}
    )

    with consuming(event, "timeline"):
        ids = current_ids()
        written = current_traceparent()

    assert ids is not None and int(ids[0], 16) != 0
    assert written is not None and written.startswith(f"00-{ids[0]}-{ids[1]}-")
    # Not exported, so not sampled: the flag says so to whoever reads it.
    assert int(written.rsplit("-", 1)[1], 16) & 0x01 == 0


class _JsonLines(logging.Handler):
    """Formats each record when it is emitted, in the context it was logged in."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(JsonFormatter().format(record)))


async def test_an_unexpected_error_is_logged_and_answered_in_the_requests_trace() -> None:
    configure_tracing(TracingSettings())
    app = FastAPI()  # its own SERVER span continues the caller's traceparent
    install_problem_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    logs = _JsonLines()
    logger = logging.getLogger("gateway.api.problems")
    logger.addHandler(logs)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            response = await client.get("/boom", headers={"traceparent": TRACEPARENT})
    finally:
        logger.removeHandler(logs)

    assert response.status_code == 500
    assert response.headers["X-Trace-Id"] == TRACE_ID
    assert response.json()["trace_id"] == TRACE_ID
    [line] = [line for line in logs.lines if line["msg"] == "unexpected error"]
    assert line["trace_id"] == TRACE_ID


def test_tracing_settings_come_from_the_environment_and_export_needs_an_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("YWTB_TRACING_ENABLED", "true")
    monkeypatch.setenv("YWTB_TRACING_OTLP_ENDPOINT", "http://collector:4318/v1/traces")
    monkeypatch.setenv("YWTB_TRACING_SERVICE_NAME", "ywtb-worker-evidence")

    tracing = load_settings().tracing

    assert (tracing.enabled, tracing.otlp_endpoint, tracing.service_name) == (
        True,
        "http://collector:4318/v1/traces",
        "ywtb-worker-evidence",
    )
    assert TracingSettings().enabled is False and TracingSettings().otlp_endpoint is None
    with pytest.raises(ValidationError, match="YWTB_TRACING_OTLP_ENDPOINT"):
        TracingSettings(enabled=True)
