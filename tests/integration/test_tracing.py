"""One trace from an application request to the worker and the platform call it causes."""

from __future__ import annotations

import gzip
import json
import secrets
import signal
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from sqlalchemy import select

from adapters.signing import sign_request
from adapters.simulation import ServedApp
from adapters.ywtb.mapping import callback_body
from gateway.bootstrap import Container
from gateway.bus import record_to_event
from gateway.settings import Settings, TracingSettings
from gateway.store.models import OutboxRow
from schemas.events import APPLICATION_EVENTS, ApplicationEvent
from tests.integration.conftest import Platform
from tests.integration.test_applications import JINGAN, body, low_voltage
from tests.integration.test_async_flows import a_case
from tests.kafka import read_topic
from tests.running import eventually, running, worker_process


def new_traceparent() -> tuple[str, str]:
    """A sampled ``traceparent`` as a calling system that traces would send, and its trace id."""
    trace_id = secrets.token_hex(16)
    return f"00-{trace_id}-{secrets.token_hex(8)}-01", trace_id


def trace_id_of(traceparent: str | bytes | None) -> str | None:
    if traceparent is None:
        return None
    text = traceparent.decode() if isinstance(traceparent, bytes) else traceparent
    return text.split("-")[1]


async def outbox_rows(connector: Container, key: str) -> list[OutboxRow]:
    async with connector.sessions() as session:
        rows = await session.scalars(
            select(OutboxRow).where(OutboxRow.key == key).order_by(OutboxRow.seq)
        )
        return list(rows.all())


def otlp_collector(exports: list[ExportTraceServiceRequest]) -> FastAPI:
    """An OpenTelemetry collector's OTLP/HTTP traces endpoint, keeping what it receives."""
    app = FastAPI()

    @app.post("/v1/traces")
    async def export(request: Request) -> Response:
        raw = await request.body()
        if request.headers.get("content-encoding") == "gzip":
            raw = gzip.decompress(raw)
        exports.append(ExportTraceServiceRequest.FromString(raw))
        return Response(
            ExportTraceServiceResponse().SerializeToString(), media_type="application/x-protobuf"
        )

    return app


def json_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for text in path.read_text().splitlines():
        try:
            lines.append(json.loads(text))
        except ValueError:
            continue
    return lines


async def test_the_trace_of_an_application_reaches_the_worker_log_and_its_licence_call(
    api: httpx.AsyncClient,
    connector: Container,
    platforms: dict[str, Platform],
    settings: Settings,
    tmp_path: Path,
) -> None:
    licence = platforms["licence"]
    licence.control.faults.latency_s = 2.5  # beyond the 1 s budget: the worker fetches it
    traceparent, trace_id = new_traceparent()

    response = await api.post(
        "/api/v1/applications", json=body(), headers={"traceparent": traceparent}
    )

    assert response.status_code == 201, response.text
    application = response.json()
    assert application["status"] == "evidence_pending"
    assert response.headers["X-Trace-Id"] == trace_id, "the caller's trace is continued"
    # (a) the outbox row of the request's event keeps the trace
    received_row = next(
        r
        for r in await outbox_rows(connector, application["id"])
        if r.type == ApplicationEvent.RECEIVED
    )
    assert trace_id_of(received_row.traceparent) == trace_id

    licence.control.faults.latency_s = 0
    licence.control.reset()  # from here on, only the worker's calls
    exports: list[ExportTraceServiceRequest] = []
    log_path = tmp_path / "worker.log"
    with ServedApp(otlp_collector(exports)) as collector:
        worker_settings = settings.model_copy(
            update={
                "tracing": TracingSettings(
                    enabled=True,
                    otlp_endpoint=f"{collector.url}/v1/traces",
                    service_name="ywtb-worker-evidence",
                )
            }
        )
        worker = worker_process("evidence", worker_settings, log_path)
        try:
            async with running(connector):  # the relay

                async def ready() -> bool:
                    current = await api.get(f"/api/v1/applications/{application['id']}")
                    return bool(current.json()["status"] == "ready")

                await eventually(ready, timeout_s=60)
                records = await read_topic(
                    settings.kafka.bootstrap or "", APPLICATION_EVENTS, expect=2
                )
        finally:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0, log_path.read_text()
        # the worker exports its spans on the way out

    # (b) the message on the topic carries it in the CloudEvents tracing extension
    message = next(r for r in records if record_to_event(r).get_id() == received_row.event_id)
    assert trace_id_of(dict(message.headers)["ce_traceparent"]) == trace_id

    # (c) the worker's log line for that message names the trace, and its own span
    handled = [
        line
        for line in json_lines(log_path)
        if line["msg"] == "event handled" and line.get("event_id") == received_row.event_id
    ]
    assert len(handled) == 1, log_path.read_text()
    assert handled[0]["trace_id"] == trace_id
    worker_span = handled[0]["span_id"]

    # (d) the licence library received the worker's call with the trace, from the worker's span
    calls = [r for r in licence.control.received if r.method == "POST"]
    assert len(calls) == 1
    assert calls[0].headers["traceparent"] == f"00-{trace_id}-{worker_span}-01"

    # ... and what the worker wrote carries the trace onward
    completed_row = next(
        r
        for r in await outbox_rows(connector, application["id"])
        if r.type == ApplicationEvent.DOSSIER_COMPLETED
    )
    assert completed_row.traceparent == f"00-{trace_id}-{worker_span}-01"

    # The worker, configured to export, sent its span to the collector over OTLP.
    spans = [
        (span, resource_spans.resource)
        for export in exports
        for resource_spans in export.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]
    exported = [s for s, _ in spans if s.span_id.hex() == worker_span]
    assert len(exported) == 1, spans
    assert exported[0].trace_id.hex() == trace_id
    assert exported[0].name == f"process {ApplicationEvent.RECEIVED}"
    resource = next(r for s, r in spans if s.span_id.hex() == worker_span)
    names = {a.value.string_value for a in resource.attributes if a.key == "service.name"}
    assert names == {"ywtb-worker-evidence"}


async def test_a_request_without_a_valid_traceparent_starts_a_trace_of_its_own(
    api: httpx.AsyncClient, connector: Container, platforms: dict[str, Platform]
) -> None:
    plain = await api.post("/api/v1/applications", json=low_voltage(JINGAN))
    malformed = await api.post(
        "/api/v1/applications",
        json=low_voltage(JINGAN),
        headers={"traceparent": "00-not-a-trace-01"},
    )

    trace_ids = []
    for response in (plain, malformed):
        assert response.status_code == 201, response.text
        trace_id = response.headers["X-Trace-Id"]
        assert len(trace_id) == 32 and int(trace_id, 16) != 0
        rows = await outbox_rows(connector, response.json()["id"])
        assert rows, "the request wrote its events"
        assert {trace_id_of(row.traceparent) for row in rows} == {trace_id}
        trace_ids.append(trace_id)
    assert trace_ids[0] != trace_ids[1]
    probe = await api.get("/healthz")
    assert probe.status_code == 200 and "X-Trace-Id" not in probe.headers, "probes are not traced"


async def test_a_platform_callback_continues_its_trace_into_the_events_it_causes(
    api: httpx.AsyncClient, connector: Container, settings: Settings
) -> None:
    path = "/callbacks/ywtb/cases"
    raw = json.dumps(callback_body(a_case("SH2026112600077")), ensure_ascii=False).encode()
    signed = sign_request(
        "POST",
        path,
        raw,
        app_id=settings.ywtb.callback_app_id,
        secret=settings.ywtb.callback_key.get_secret_value(),
    )
    traceparent, trace_id = new_traceparent()

    response = await api.post(
        path,
        content=raw,
        headers={**signed, "Content-Type": "application/json", "traceparent": traceparent},
    )

    assert response.status_code == 200, response.text
    assert response.headers["X-Trace-Id"] == trace_id
    async with connector.sessions() as session:
        rows = list((await session.scalars(select(OutboxRow))).all())
    assert {row.type for row in rows} >= {"cn.sgcc.sh.ywtb.case.received"}
    assert {trace_id_of(row.traceparent) for row in rows} == {trace_id}
