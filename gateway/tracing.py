"""Tracing: one W3C trace from an HTTP request to the platform calls it causes, however late.

The trace context (``traceparent``) travels

- in: an HTTP request's ``traceparent`` header (a platform's callback included)
  continues the caller's trace, or a new one starts. FastAPI makes that SERVER
  span itself (its native OpenTelemetry support, FastAPI 0.142 and later) once
  a tracer provider is installed; the answer names the trace in ``X-Trace-Id``
  (``gateway.api.app``, and ``gateway.api.problems`` for errors);
- through the store: each outbox row keeps the context of the transaction that
  wrote it (``current_traceparent``, read by ``gateway.outbox.add_event``);
- over Kafka: the relay puts it in the CloudEvents distributed-tracing
  extension, header ``ce_traceparent`` (``gateway.bus.outbox_to_message``);
- in a worker: ``consuming(event, worker)`` continues it around the handler, so
  its log lines, the events it writes and its platform calls belong to it;
- out: every request of the shared ``httpx.AsyncClient`` carries ``traceparent``
  (an event hook, ``instrument_http``), SOAP calls too, since zeep posts
  through that client.

Every log line carries ``trace_id`` and ``span_id`` (``gateway.logs``).

Decision: trace ids are made and propagated whether or not spans are exported.
The OpenTelemetry SDK tracer provider always makes the ids; without export its
sampler records nothing of its own (``ParentBased(ALWAYS_OFF)``: a new trace
goes out with the sampled flag clear, a caller's sampled flag is kept), and no
span processor is installed, so a span costs an id and a context switch.
With ``tracing.enabled`` and ``tracing.otlp_endpoint``, spans are exported over
OTLP/HTTP in batches, a share ``sample_ratio`` of new traces recorded.

The tracer provider is process-wide, like the logging configuration: the first
``configure_tracing`` of a process (``bootstrap`` calls it) decides it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

import httpx
from cloudevents.core.base import BaseCloudEvent
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.settings import TracingSettings

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
TRACE_ID_HEADER = "X-Trace-Id"
"""The response header naming the request's trace id (32 hex digits)."""

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACER_NAME = "ywtb-connector"


def configure_tracing(settings: TracingSettings) -> None:
    """Install the process's tracer provider (the first call wins; later ones change nothing)."""
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    exporting = settings.enabled and settings.otlp_endpoint is not None
    root = TraceIdRatioBased(settings.sample_ratio) if exporting else ALWAYS_OFF
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name}),
        sampler=ParentBased(root),
    )
    if exporting:
        # Imported only when used: the exporter pulls in protobuf.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(settings.otlp_endpoint)))
    trace.set_tracer_provider(provider)
    log.info(
        "tracing configured",
        extra={"export": settings.otlp_endpoint if exporting else None},
    )


UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Probes and scrapes: frequent, alike, and no one's story."""


def untraced(scope: MutableMapping[str, Any]) -> bool:
    """FastAPI's ``telemetry.exclude``: requests that get no span."""
    return scope.get("path") in UNTRACED_PATHS


def _tracer() -> trace.Tracer:
    return trace.get_tracer(_TRACER_NAME)


def current_ids() -> tuple[str, str] | None:
    """The current trace id and span id (hex), or None outside any trace."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return trace.format_trace_id(span_context.trace_id), trace.format_span_id(span_context.span_id)


def current_traceparent() -> str | None:
    """The current context as a ``traceparent`` value, or None outside any trace."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get(TRACEPARENT)


def _extract(carrier: Mapping[str, str]) -> otel_context.Context:
    return _PROPAGATOR.extract(carrier)


# --- out: platform calls --------------------------------------------------------


async def _inject_traceparent(request: httpx.Request) -> None:
    _PROPAGATOR.inject(request.headers)


def instrument_http(http: httpx.AsyncClient) -> httpx.AsyncClient:
    """Make every request of ``http`` carry the current ``traceparent`` (idempotent)."""
    hooks = http.event_hooks
    if _inject_traceparent not in hooks["request"]:
        http.event_hooks = {**hooks, "request": [*hooks["request"], _inject_traceparent]}
    return http


# --- a worker's message ---------------------------------------------------------


@contextmanager
def consuming(event: BaseCloudEvent, worker: str) -> Iterator[trace.Span]:
    """A CONSUMER span around a worker's handling of ``event``, in the trace it came with.

    The trace is the one in the event's ``traceparent`` extension (Kafka header
    ``ce_traceparent``), or a new one. Ends with an "event handled" log line.
    """
    carrier: dict[str, str] = {}
    for name in (TRACEPARENT, "tracestate"):
        value = event.get_extension(name)
        if isinstance(value, str):
            carrier[name] = value
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.message.id": event.get_id(),
        "messaging.consumer.group.name": f"ywtb.worker.{worker}",
        "cloudevents.event_type": event.get_type(),
        "ywtb.worker": worker,
    }
    started = time.perf_counter()
    with _tracer().start_as_current_span(
        f"process {event.get_type()}",
        context=_extract(carrier),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    ) as span:
        yield span
        log.info(
            "event handled",
            extra={
                "worker": worker,
                "event_id": event.get_id(),
                "type": event.get_type(),
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
