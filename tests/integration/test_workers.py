"""Workers apply each event once: redeliveries, SIGKILL mid-batch and SIGTERM lose nothing."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from cloudevents.core.bindings.kafka import KafkaMessage
from sqlalchemy import func, select

from gateway.bootstrap import Container
from gateway.bus import outbox_to_message
from gateway.devbroker import DevBroker
from gateway.lag import worker_lag
from gateway.outbox import add_event
from gateway.relay import Relay
from gateway.store.db import transaction
from gateway.store.models import InboxRow, OutboxRow, TimelineEntry
from gateway.worker import Worker
from gateway.workers import WORKER_TOPICS, WORKERS
from schemas.events import APPLICATION_EVENTS, ApplicationEvent, Event
from tests.running import worker_process


def _event(key: str, n: int) -> Event:
    return Event(topic=APPLICATION_EVENTS, type=ApplicationEvent.RECEIVED, key=key, data={"n": n})


async def _timeline_count(container: Container) -> tuple[int, int]:
    """(rows, distinct event ids) in the timeline."""
    async with container.sessions() as session:
        rows = await session.scalar(select(func.count()).select_from(TimelineEntry))
        distinct = await session.scalar(select(func.count(func.distinct(TimelineEntry.event_id))))
    return int(rows or 0), int(distinct or 0)


async def _wait_for(predicate, timeout_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout_s):
        while not await predicate():
            await asyncio.sleep(0.05)


async def _publish_through_outbox(container: Container, events: list[Event]) -> None:
    async with transaction(container.sessions) as session:
        for event in events:
            add_event(session, event)
    stop = asyncio.Event()
    relay = asyncio.create_task(
        Relay(container.sessions, container.bus, container.settings.relay).run(stop)
    )

    async def published() -> bool:
        async with container.sessions() as session:
            return not await session.scalar(select(func.count()).where(OutboxRow.sent_at.is_(None)))

    try:
        await _wait_for(published)
    finally:
        stop.set()
        await relay


def _message(event: Event) -> KafkaMessage:
    """The Kafka message the relay would send for ``event``."""
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
    return outbox_to_message(row)


async def test_the_same_event_delivered_twice_has_one_effect(container: Container) -> None:
    duplicate, sentinel = _event("app-dup", 1), _event("app-dup", 2)
    acked = await container.bus.publish(
        [(APPLICATION_EVENTS, _message(e)) for e in (duplicate, duplicate, sentinel)]
    )
    assert acked == [True, True, True]

    stop = asyncio.Event()
    worker = Worker(WORKERS["timeline"](container), container.sessions, container.settings)
    task = asyncio.create_task(worker.run(stop))

    async def sentinel_applied() -> bool:
        async with container.sessions() as session:
            return (await session.get(InboxRow, ("timeline", sentinel.id))) is not None

    try:
        await _wait_for(sentinel_applied)
    finally:
        stop.set()
        await task

    async with container.sessions() as session:
        entries = (
            await session.scalars(
                select(TimelineEntry).where(TimelineEntry.event_id == duplicate.id)
            )
        ).all()
    assert len(entries) == 1
    assert entries[0].application_id == "app-dup"
    assert entries[0].type == ApplicationEvent.RECEIVED
    assert worker.applied == 2  # the duplicate and the sentinel; the redelivery was skipped


async def test_a_worker_killed_mid_batch_loses_nothing_and_applies_nothing_twice(
    container: Container, tmp_path: Path
) -> None:
    total = 400
    await _publish_through_outbox(container, [_event(f"app-{n % 9}", n) for n in range(total)])

    first = worker_process("timeline", container.settings, tmp_path / "worker.log")
    try:

        async def some_applied() -> bool:
            return (await _timeline_count(container))[0] >= 40

        await _wait_for(some_applied, timeout_s=60)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        first.kill()
    at_kill, _ = await _timeline_count(container)
    assert at_kill < total, "the worker finished before it was killed: the test proved nothing"

    second = worker_process("timeline", container.settings, tmp_path / "worker.log")
    try:

        async def all_applied() -> bool:
            return (await _timeline_count(container))[1] >= total

        await _wait_for(all_applied, timeout_s=90)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=20) == 0

    rows, distinct = await _timeline_count(container)
    assert (rows, distinct) == (total, total)


async def test_sigterm_finishes_the_message_in_hand_commits_and_leaves(
    container: Container, broker: DevBroker, tmp_path: Path
) -> None:
    total = 300
    await _publish_through_outbox(container, [_event("app-term", n) for n in range(total)])

    worker = worker_process("timeline", container.settings, tmp_path / "worker.log")

    async def some_applied() -> bool:
        return (await _timeline_count(container))[0] >= 20

    try:
        await _wait_for(some_applied, timeout_s=60)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0
    finally:
        worker.kill()
    applied, _ = await _timeline_count(container)

    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id="ywtb.worker.timeline",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(APPLICATION_EVENTS) or set()
        committed = 0
        for p in partitions:
            committed += await consumer.committed(TopicPartition(APPLICATION_EVENTS, p)) or 0
    finally:
        await consumer.stop()
    assert committed == applied, "every applied event is committed, and nothing more"
    assert "worker stopped" in (tmp_path / "worker.log").read_text()


async def test_lag_counts_what_a_worker_has_not_yet_applied(container: Container) -> None:
    await _publish_through_outbox(container, [_event(f"app-lag-{n % 4}", n) for n in range(30)])
    settings = container.settings.kafka

    before = await worker_lag(settings, {"timeline": WORKER_TOPICS["timeline"]})
    main = [r for r in before if r["group"] == "ywtb.worker.timeline"]
    assert sum(r["lag"] for r in main if r["topic"] == APPLICATION_EVENTS) == 30
    assert all(r["lag"] == 0 for r in before if r["topic"] != APPLICATION_EVENTS)

    stop = asyncio.Event()
    worker = Worker(WORKERS["timeline"](container), container.sessions, container.settings)
    task = asyncio.create_task(worker.run(stop))

    async def all_applied() -> bool:
        return (await _timeline_count(container))[0] >= 30

    try:
        await _wait_for(all_applied, timeout_s=60)
    finally:
        stop.set()
        await task

    after = await worker_lag(settings, {"timeline": WORKER_TOPICS["timeline"]})
    assert [r["lag"] for r in after] == [0] * len(after)
    assert sum(r["committed"] for r in after if r["topic"] == APPLICATION_EVENTS) == 30
