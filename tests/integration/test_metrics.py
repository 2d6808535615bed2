"""``/metrics`` as Prometheus reads it, after real traffic; lag in seconds with a real worker."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy import func, select

from gateway.bootstrap import Container
from gateway.devbroker import free_port
from gateway.metrics import exported_families
from gateway.settings import Settings
from gateway.store.models import OutboxRow
from schemas.events import APPLICATION_EVENTS, PERMIT_EVENTS
from tests.integration.test_applications import JINGAN, low_voltage
from tests.integration.test_async_flows import a_case, post_signed
from tests.running import eventually, running

Samples = dict[str, list[Sample]]

TIMELINE = "ywtb.worker.timeline"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.metrics.interval_s = 0.2  # the store and Kafka figures, gathered continuously
    settings.metrics.port = free_port()  # and /metrics without a key on a port of its own
    return settings


async def scrape(api: httpx.AsyncClient) -> Samples:
    """``/metrics`` parsed by prometheus_client's own parser: samples per family."""
    response = await api.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {family.name: family.samples for family in text_string_to_metric_families(response.text)}


def value(samples: Samples, family: str, sample: str | None = None, **labels: str) -> float:
    """The value of the one sample of ``family`` with ``labels`` (0 when absent)."""
    found = [
        s.value
        for s in samples.get(family, [])
        if (sample is None or s.name == sample) and labels.items() <= s.labels.items()
    ]
    assert len(found) <= 1, (family, labels, found)
    return found[0] if found else 0.0


async def application_events(connector: Container) -> int:
    async with connector.sessions() as session:
        return int(
            await session.scalar(select(func.count()).where(OutboxRow.topic == APPLICATION_EVENTS))
            or 0
        )


async def test_metrics_show_requests_platform_calls_refusals_and_store_figures(
    api: httpx.AsyncClient, connector: Container, settings: Settings
) -> None:
    unauthenticated = await api.get("/metrics", headers={"Authorization": ""})
    assert unauthenticated.status_code == 401
    before = await scrape(api)

    submitted = await api.post(
        "/api/v1/applications", json=low_voltage(JINGAN), headers={"Idempotency-Key": "metrics-1"}
    )
    assert submitted.status_code == 201, submitted.text
    forged, _ = await post_signed(
        api,
        "/callbacks/ywtb/cases",
        a_case("SH-METRICS-1").model_dump(mode="json"),
        app_id=settings.ywtb.callback_app_id,
        secret="forged",
    )
    assert forged.status_code == 401
    async with running(connector):  # the relay publishes the application's events

        async def published() -> bool:
            after = await scrape(api)
            return (
                value(after, "ywtb_outbox_pending") == 0
                and value(after, "ywtb_applications", status="ready") == 1
                and sum(timeline_lag(after, "ywtb_consumer_lag_messages").values())
                == await application_events(connector)
            )

        await eventually(published)
    after = await scrape(api)

    def grew(family: str, sample: str, **labels: str) -> float:
        return value(after, family, sample, **labels) - value(before, family, sample, **labels)

    assert set(exported_families()) <= set(after), "every family is exposed"
    assert (
        grew(
            "ywtb_http_requests",
            "ywtb_http_requests_total",
            route="/api/v1/applications",
            method="POST",
            status="201",
        )
        == 1
    )
    assert (
        grew(
            "ywtb_http_request_duration_seconds",
            "ywtb_http_request_duration_seconds_count",
            route="/api/v1/applications",
            method="POST",
        )
        == 1
    )
    licence_ok = {"platform": "licence", "operation": "fetch_licence", "outcome": "ok"}
    assert grew("ywtb_platform_calls", "ywtb_platform_calls_total", **licence_ok) >= 1
    assert (
        grew(
            "ywtb_platform_call_duration_seconds",
            "ywtb_platform_call_duration_seconds_count",
            platform="licence",
            operation="fetch_licence",
        )
        >= 1
    )
    assert (
        grew(
            "ywtb_callback_refusals",
            "ywtb_callback_refusals_total",
            platform="ywtb",
            reason="bad_signature",
        )
        == 1
    )
    assert (
        grew(
            "ywtb_evidence_fetches",
            "ywtb_evidence_fetches_total",
            kind="licence",
            outcome="fetched",
        )
        == 1
    )
    assert grew("ywtb_relay_published", "ywtb_relay_published_total") >= 1
    assert value(after, "ywtb_applications", status="ready") == 1
    assert value(after, "ywtb_applications", status="rejected") == 0
    assert value(after, "ywtb_outbox_oldest_age_seconds") == 0
    assert {s.labels["platform"] for s in after["ywtb_circuit_state"]} == {
        "licence",
        "project",
        "permit",
        "ywtb",
        "marketing",
    }
    assert value(after, "ywtb_circuit_state", platform="licence") == 0  # closed
    async with httpx.AsyncClient() as plain:  # no key: the metrics port is for a private network
        separate = await plain.get(f"http://127.0.0.1:{settings.metrics.port}/metrics")
    assert separate.status_code == 200
    on_port = {f.name: f.samples for f in text_string_to_metric_families(separate.text)}
    assert value(on_port, "ywtb_applications", status="ready") == 1
    assert set(exported_families()) <= set(on_port)
    progress = value(after, "ywtb_loop_last_progress_timestamp_seconds", loop="ops-figures")
    assert time.time() - progress < 10, "the figures job makes progress"
    assert {s.labels["part"]: s.value for s in after["ywtb_figures_up"]} == {
        "store": 1,
        "lag": 1,
        "dead_letters": 1,
    }
    # No worker ran: the timeline worker has every application event yet to consume.
    assert await application_events(connector) >= 1
    assert sum(timeline_lag(after, "ywtb_consumer_lag_messages").values()) == (
        await application_events(connector)
    )
    assert min(timeline_lag(after, "ywtb_consumer_lag_seconds").values()) >= 0


def timeline_lag(samples: Samples, family: str) -> dict[str, float]:
    """Lag of the timeline worker on ywtb.application.events, per partition."""
    return {
        s.labels["partition"]: s.value
        for s in samples.get(family, [])
        if s.labels["group"] == TIMELINE and s.labels["topic"] == APPLICATION_EVENTS
    }


async def until(api: httpx.AsyncClient, check: Callable[[Samples], bool]) -> Samples:
    """Scrape until ``check`` holds (the figures are gathered every 0.2 s); return that scrape."""
    seen: list[Samples] = []

    async def holds() -> bool:
        seen.append(await scrape(api))
        return check(seen[-1])

    await eventually(holds)
    return seen[-1]


async def test_lag_in_seconds_rises_while_a_worker_is_stopped_and_returns_to_zero(
    api: httpx.AsyncClient, connector: Container
) -> None:
    def caught_up(samples: Samples) -> bool:
        messages = timeline_lag(samples, "ywtb_consumer_lag_messages")
        seconds = timeline_lag(samples, "ywtb_consumer_lag_seconds")
        return (
            len(messages) == 3
            and len(seconds) == 3
            and set(messages.values()) == {0}
            and set(seconds.values()) == {0}
        )

    async with running(connector, "timeline"):
        first = await api.post(
            "/api/v1/applications", json=low_voltage(JINGAN), headers={"Idempotency-Key": "lag-1"}
        )
        assert first.status_code == 201
        await until(api, caught_up)

    # The timeline worker is stopped; the relay goes on publishing.
    async with running(connector):
        second = await api.post(
            "/api/v1/applications", json=low_voltage(JINGAN), headers={"Idempotency-Key": "lag-2"}
        )
        assert second.status_code == 201
        behind = await until(
            api, lambda s: sum(timeline_lag(s, "ywtb_consumer_lag_messages").values()) >= 1
        )
        waiting = {p for p, n in timeline_lag(behind, "ywtb_consumer_lag_messages").items() if n}
        earlier = max(timeline_lag(behind, "ywtb_consumer_lag_seconds")[p] for p in waiting)
        later = await until(
            api,
            lambda s: (
                max(timeline_lag(s, "ywtb_consumer_lag_seconds")[p] for p in waiting)
                >= earlier + 1.0
            ),
        )
        assert set(timeline_lag(later, "ywtb_consumer_lag_messages")) == {"0", "1", "2"}

    async with running(connector, "timeline"):
        resumed = await until(api, caught_up)
    assert timeline_lag(resumed, "ywtb_consumer_lag_seconds") == {"0": 0, "1": 0, "2": 0}


async def test_dead_letters_are_counted_per_topic_and_worker(
    api: httpx.AsyncClient, connector: Container, settings: Settings
) -> None:
    def dead(samples: Samples, worker: str) -> float:
        return value(
            samples,
            "ywtb_dead_letters",
            "ywtb_dead_letters_total",
            topic="ywtb.permit.events.dlq",
            worker=worker,
        )

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap)
    await producer.start()
    try:
        async with running(connector, "permits"):
            # Not a CloudEvent: the worker cannot decode it and dead-letters it at once.
            await producer.send_and_wait(PERMIT_EVENTS, b"not an event", key=b"garbage-1")
            await until(api, lambda s: dead(s, "permits") == 1)
            await producer.send_and_wait(PERMIT_EVENTS, b"nor this", key=b"garbage-2")
            counted = await until(api, lambda s: dead(s, "permits") == 2)
    finally:
        await producer.stop()
    assert dead(counted, "timeline") == 0, "the timeline worker did not run"
