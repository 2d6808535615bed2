"""Worker failure policy: the store waited out, platforms retried then left to the store,
dead letters only for what can never succeed, every attempt and real cause recorded."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
from aiokafka import TopicPartition
from cloudevents.core.base import BaseCloudEvent
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.bootstrap import Container
from gateway.bus import kafka_consumer, kafka_producer, outbox_to_message, record_to_event
from gateway.dlq import read_dead_letters
from gateway.lag import worker_lag
from gateway.settings import Settings
from gateway.store.models import Delivery, InboxRow, OutboxRow
from gateway.worker import Effect, Worker, WorkerSpec
from gateway.workers import WORKER_TOPICS, WORKERS
from schemas.errors import StoreUnavailable
from schemas.events import APPLICATION_EVENTS, ApplicationEvent, CaseEvent, Event, retry_topic
from tests.integration.conftest import Platform
from tests.integration.test_async_flows import a_case, application_of, file_case, pushes
from tests.kafka import read_topic
from tests.running import eventually, running, worker_process


async def _delivery(container: Container, worker: str, event_id: str) -> Delivery | None:
    async with container.sessions() as session:
        return await session.get(Delivery, (worker, event_id))


async def _committed(container: Container, group: str, tp: TopicPartition) -> int | None:
    consumer = kafka_consumer(container.settings.kafka, group_id=group)
    await consumer.start()
    try:
        offset: int | None = await consumer.committed(tp)
        return offset
    finally:
        await consumer.stop()


def _message(event: Event) -> tuple[str, object]:
    row = OutboxRow(
        event_id=event.id,
        topic=event.topic,
        key=event.key,
        type=event.type,
        source=event.source,
        subject=event.subject,
        time=event.time,
        data=event.data,
    )
    return event.topic, outbox_to_message(row)


async def test_a_store_outage_is_waited_out_in_place_uncommitted_and_never_forwarded(
    container: Container,
) -> None:
    """While the store is away the message stays in hand: no .retry, no dead letter, no commit."""
    store_back = asyncio.Event()
    tries: list[float] = []

    async def handle(_event: BaseCloudEvent) -> Effect:
        tries.append(time.monotonic())
        if not store_back.is_set():
            raise StoreUnavailable("store unreachable: connection refused")

        async def effect(_session: AsyncSession) -> None:
            """The inbox row is the effect."""

        return effect

    spec = WorkerSpec("store-probe", (APPLICATION_EVENTS,), handle)
    event = Event(topic=APPLICATION_EVENTS, type=ApplicationEvent.RECEIVED, key="app-s", data={})
    assert await container.bus.publish([_message(event)]) == [True]  # type: ignore[list-item]
    records = await read_topic(
        container.settings.kafka.bootstrap or "", APPLICATION_EVENTS, expect=1
    )
    tp = TopicPartition(APPLICATION_EVENTS, records[0].partition)

    stop = asyncio.Event()
    task = asyncio.create_task(Worker(spec, container.sessions, container.settings).run(stop))
    try:
        in_place = container.settings.worker.in_place_attempts
        await eventually(lambda: _true(len(tries) > in_place + 1), timeout_s=30)
        assert await _committed(container, spec.group_id, tp) is None, "committed while failing"
        store_back.set()

        async def applied() -> bool:
            async with container.sessions() as session:
                return await session.get(InboxRow, (spec.name, event.id)) is not None

        await eventually(applied, timeout_s=30)
        await eventually(
            lambda: _equals(_committed(container, spec.group_id, tp), records[0].offset + 1)
        )
    finally:
        stop.set()
        await task

    retried = await read_topic(
        container.settings.kafka.bootstrap or "",
        retry_topic(APPLICATION_EVENTS),
        expect=1,
        timeout_s=2,
    )
    assert retried == [], "a store outage is not sent through .retry"
    assert await read_dead_letters(container.settings.kafka) == []
    row = await _delivery(container, spec.name, event.id)
    assert row is not None and row.status == "delivered"
    assert row.attempts == len(tries), "every try is counted, the in-place ones too"


async def _true(value: bool) -> bool:
    return value


async def _equals(value: object, expected: object) -> bool:
    return await value == expected  # type: ignore[misc]


async def test_a_platform_down_past_every_round_is_left_to_the_store_not_dead_lettered(
    api: httpx.AsyncClient,
    connector: Container,
    platforms: dict[str, Platform],
    settings: Settings,
    api_port: int,
) -> None:
    platforms["marketing"].control.faults.down = True
    case = a_case("SH-DOWN-0001")
    async with running(connector, "marketing"):
        await file_case(platforms, settings, api_port, case)
        application_id = await application_of(connector, case.case_no)
        async with connector.sessions() as session:
            event_id = await session.scalar(
                select(OutboxRow.event_id).where(
                    OutboxRow.key == application_id, OutboxRow.type == CaseEvent.RECEIVED
                )
            )
        assert event_id is not None
        rounds = 1 + len(settings.worker.retry_delays_s)
        every_try = settings.worker.in_place_attempts * rounds

        async def given_up() -> bool:
            row = await _delivery(connector, "marketing", event_id)
            if row is None or row.attempts < every_try:
                return False
            lag = await worker_lag(settings.kafka, {"marketing": WORKER_TOPICS["marketing"]})
            return all(r["lag"] == 0 for r in lag)

        await eventually(given_up, timeout_s=60)

    row = await _delivery(connector, "marketing", event_id)
    assert row is not None
    assert (row.status, row.attempts) == ("retrying", every_try)
    assert row.last_error is not None and "503" in row.last_error, row.last_error
    assert "circuit open" not in row.last_error
    assert await read_dead_letters(settings.kafka) == [], "a platform outage is no dead letter"


async def test_every_worker_records_the_messages_it_dead_letters(container: Container) -> None:
    producer = kafka_producer(container.settings.kafka)
    await container.bus.ensure_topics([APPLICATION_EVENTS])
    await producer.start()
    try:
        sent = await producer.send_and_wait(APPLICATION_EVENTS, b"not a cloudevent", key=b"app-x")
    finally:
        await producer.stop()
    event_id = f"{APPLICATION_EVENTS}/{sent.partition}/{sent.offset}"

    stop = asyncio.Event()
    worker = Worker(WORKERS["timeline"](container), container.sessions, container.settings)
    task = asyncio.create_task(worker.run(stop))
    try:

        async def recorded() -> bool:
            return await _delivery(container, "timeline", event_id) is not None

        await eventually(recorded, timeout_s=30)
    finally:
        stop.set()
        await task

    row = await _delivery(container, "timeline", event_id)
    assert row is not None
    assert (row.status, row.application_id, row.attempts) == ("dead", "app-x", 1)
    letters = await read_dead_letters(container.settings.kafka)
    assert [(d.worker, d.value) for d in letters] == [("timeline", b"not a cloudevent")]
    assert row.last_error == letters[0].header("ywtb_error")


async def test_sigterm_while_an_ordered_push_waits_out_an_outage_commits_nothing(
    api: httpx.AsyncClient,
    connector: Container,
    platforms: dict[str, Platform],
    settings: Settings,
    api_port: int,
    tmp_path: Path,
) -> None:
    settings.worker.record_every_s = 1.0
    case = a_case("SH-TERM-0001")
    await file_case(platforms, settings, api_port, case)
    application_id = await application_of(connector, case.case_no)
    platforms["ywtb"].control.faults.down = True
    response = await api.post(
        f"/api/v1/applications/{application_id}/progress",
        json={"stage": "accepted", "handler": "静安供电服务中心 王工"},
    )
    assert response.status_code == 201, response.text
    event_id = response.json()["event_id"]
    log = tmp_path / "ywtb-status.log"
    group = "ywtb.worker.ywtb-status"

    async with running(connector):
        records = await read_topic(settings.kafka.bootstrap or "", APPLICATION_EVENTS, expect=3)
        (push,) = [r for r in records if record_to_event(r).get_id() == event_id]
        tp = TopicPartition(APPLICATION_EVENTS, push.partition)

        worker = worker_process("ywtb-status", settings, log)
        try:

            async def waiting_it_out() -> bool:
                row = await _delivery(connector, "ywtb-status", event_id)
                return row is not None and row.attempts >= 3

            await eventually(waiting_it_out, timeout_s=60)
            started = time.monotonic()
            worker.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(worker.wait, 30)
            assert (code, time.monotonic() - started < 10) == (0, True)
        finally:
            worker.kill()
        committed = await _committed(connector, group, tp)
        assert committed is None or committed <= push.offset, "the unfinished push was committed"
        waiting = await _delivery(connector, "ywtb-status", event_id)
        assert waiting is not None and waiting.status == "retrying"
        assert waiting.last_error is not None and "503" in waiting.last_error, waiting.last_error
        assert await pushes(platforms) == []

        platforms["ywtb"].control.faults.down = False
        worker = worker_process("ywtb-status", settings, log)
        try:
            await eventually(lambda: _pushed(platforms), timeout_s=60)
            await asyncio.sleep(1)  # a second push would show now
        finally:
            worker.send_signal(signal.SIGTERM)
            await asyncio.to_thread(worker.wait, 30)

    arrived = await pushes(platforms)
    assert [p["SJID"] for p in arrived] == [event_id], "pushed once, after the restart"
    row = await _delivery(connector, "ywtb-status", event_id)
    assert row is not None and row.status == "delivered"
    assert row.attempts > waiting.attempts


async def _pushed(platforms: dict[str, Platform]) -> bool:
    return len(await pushes(platforms)) >= 1
