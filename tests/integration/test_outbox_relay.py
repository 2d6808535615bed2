"""The transactional outbox reaches the real broker: once, in order per key, across outages,
woken by each commit (in this process, or by PostgreSQL from another) rather than polling."""

from __future__ import annotations

import asyncio
import json
import re
from collections import defaultdict
from collections.abc import Awaitable, Sequence
from pathlib import Path

import pytest
from cloudevents.core.bindings.kafka import KafkaMessage
from sqlalchemy import event, func, select
from sqlalchemy.engine import make_url

from gateway.bootstrap import Container
from gateway.bus import KafkaBus, record_to_event
from gateway.devbroker import DevBroker
from gateway.outbox import add_event
from gateway.relay import Relay
from gateway.settings import KafkaSettings
from gateway.store.db import transaction
from gateway.store.models import ApiClient, OutboxRow, utcnow
from schemas.errors import BrokerUnavailable
from schemas.events import APPLICATION_EVENTS, SOURCE, ApplicationEvent, Event
from tests.kafka import read_topic
from tests.running import eventually, ywtb_process
from tests.tcpproxy import TcpProxy


def _event(key: str, n: int) -> Event:
    return Event(
        topic=APPLICATION_EVENTS,
        type=ApplicationEvent.RECEIVED,
        key=key,
        data={"application_id": key, "n": n},
    )


async def _run_relay_until_empty(
    container: Container, relays: int = 1, timeout_s: float = 30
) -> None:
    stop = asyncio.Event()
    buses = [KafkaBus(container.settings.kafka) for _ in range(relays)]
    workers = [
        asyncio.create_task(Relay(container.sessions, bus, container.settings.relay).run(stop))
        for bus in buses
    ]
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                async with container.sessions() as session:
                    pending = await session.scalar(
                        select(func.count()).where(OutboxRow.sent_at.is_(None))
                    )
                if pending == 0:
                    return
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*workers)
        for bus in buses:
            await bus.close()


async def test_state_and_event_commit_together_and_reach_the_topic(
    container: Container, broker: DevBroker
) -> None:
    event = _event("app-0001", 1)
    async with transaction(container.sessions) as session:
        session.add(ApiClient(name="marketing", key_hash="0" * 64, created_at=utcnow()))
        add_event(session, event)

    with pytest.raises(RuntimeError):
        async with transaction(container.sessions) as session:
            session.add(ApiClient(name="rolled-back", key_hash="1" * 64, created_at=utcnow()))
            add_event(session, _event("app-rolled-back", 1))
            raise RuntimeError("the state change failed")

    await _run_relay_until_empty(container)
    records = await read_topic(broker.bootstrap, APPLICATION_EVENTS, expect=1)

    assert len(records) == 1, "the rolled-back event must not be published"
    cloud_event = record_to_event(records[0])
    assert records[0].key == b"app-0001"
    assert cloud_event.get_id() == event.id
    assert cloud_event.get_type() == "cn.sgcc.sh.ywtb.application.received"
    assert cloud_event.get_source() == SOURCE
    assert cloud_event.get_specversion() == "1.0"
    assert cloud_event.get_data() == {"application_id": "app-0001", "n": 1}
    headers = dict(records[0].headers)
    assert headers["ce_id"] == event.id.encode()
    assert headers["content-type"] == b"application/json"
    async with container.sessions() as session:
        names = set((await session.scalars(select(ApiClient.name))).all())
    assert "marketing" in names and "rolled-back" not in names


async def test_events_committed_while_the_broker_is_down_arrive_once_in_key_order(
    container: Container, broker: DevBroker
) -> None:
    broker.stop()
    keys = [f"app-{k}" for k in range(5)]
    for n in range(10):
        async with transaction(container.sessions) as session:
            for key in keys:
                add_event(session, _event(key, n))

    stop = asyncio.Event()
    relay = asyncio.create_task(
        Relay(container.sessions, container.bus, container.settings.relay).run(stop)
    )
    await asyncio.sleep(2.0)  # the relay meets a dead broker and backs off
    async with container.sessions() as session:
        assert await session.scalar(select(func.count()).where(OutboxRow.sent_at.is_not(None))) == 0

    restarted = DevBroker(port=broker.port).start()
    try:
        async with asyncio.timeout(30):
            while True:
                async with container.sessions() as session:
                    if not await session.scalar(
                        select(func.count()).where(OutboxRow.sent_at.is_(None))
                    ):
                        break
                await asyncio.sleep(0.1)
        stop.set()
        await relay
        records = await read_topic(restarted.bootstrap, APPLICATION_EVENTS, expect=50)
    finally:
        stop.set()
        restarted.stop()

    ids = [record_to_event(r).get_id() for r in records]
    assert len(ids) == 50
    assert len(set(ids)) == 50, "an event id was published twice"
    by_key: dict[str, list[int]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_key[record.key.decode()].append(record_to_event(record).get_data()["n"])  # type: ignore[union-attr,index]
    assert by_key == {key: list(range(10)) for key in keys}


async def test_two_relays_publish_each_event_once(container: Container, broker: DevBroker) -> None:
    for n in range(40):
        async with transaction(container.sessions) as session:
            add_event(session, _event(f"app-{n % 7}", n))

    await _run_relay_until_empty(container, relays=2)
    records = await read_topic(broker.bootstrap, APPLICATION_EVENTS, expect=40)

    ids = [record_to_event(r).get_id() for r in records]
    assert len(ids) == 40 and len(set(ids)) == 40


class _RecordingBus(KafkaBus):
    """The real bus, recording the ``n`` of each batch it publishes; the broker's answer to the
    first batch's message at ``refuse`` (if any) is reported as a refusal."""

    def __init__(self, settings: KafkaSettings, refuse: int | None = None) -> None:
        super().__init__(settings)
        self.batches: list[list[int]] = []
        self._refuse = refuse

    async def send(self, messages: Sequence[tuple[str, KafkaMessage]]) -> Awaitable[list[bool]]:
        self.batches.append([json.loads(message.value)["n"] for _, message in messages])
        acknowledged = await super().send(messages)
        first = len(self.batches) == 1

        async def answer() -> list[bool]:
            acked = await acknowledged
            if self._refuse is not None and first:
                acked[self._refuse] = False
            return acked

        return answer()


def _batches_of(size: int, container: Container, bus: KafkaBus) -> Relay:
    return Relay(
        container.sessions, bus, container.settings.relay.model_copy(update={"batch_size": size})
    )


async def _backlog(container: Container, count: int, keys: int) -> None:
    async with transaction(container.sessions) as session:
        for n in range(count):
            add_event(session, _event(f"app-{n % keys}", n))


async def test_a_backlog_goes_out_batch_after_batch_each_event_once_in_key_order(
    container: Container, broker: DevBroker
) -> None:
    await _backlog(container, 23, keys=4)
    bus = _RecordingBus(container.settings.kafka)
    relay = _batches_of(5, container, bus)
    try:
        while (
            await relay.publish_once()
        ):  # full batches: each one read while the last is acknowledged
            pass
        assert await relay.publish_once() == 0  # and the last marking is done
    finally:
        await relay.release()
        await bus.close()

    # Every row sent once, in seq order, nothing skipped or sent again across batches.
    assert bus.batches == [
        [0, 1, 2, 3, 4],
        [5, 6, 7, 8, 9],
        [10, 11, 12, 13, 14],
        [15, 16, 17, 18, 19],
        [20, 21, 22],
    ]
    async with container.sessions() as session:
        assert await session.scalar(select(func.count()).where(OutboxRow.sent_at.is_(None))) == 0
    records = await read_topic(broker.bootstrap, APPLICATION_EVENTS, expect=23)
    by_key: dict[str, list[int]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_key[record.key.decode()].append(record_to_event(record).get_data()["n"])  # type: ignore[union-attr,index]
    assert by_key == {f"app-{k}": list(range(k, 23, 4)) for k in range(4)}


async def test_an_event_the_broker_refused_goes_out_again_before_any_later_one(
    container: Container, broker: DevBroker
) -> None:
    await _backlog(container, 12, keys=3)
    bus = _RecordingBus(container.settings.kafka, refuse=2)
    relay = _batches_of(4, container, bus)
    try:
        with pytest.raises(BrokerUnavailable, match="acknowledged 3 of 4"):
            await relay.publish_once()
        while await relay.publish_once():
            pass
        assert await relay.publish_once() == 0
    finally:
        await relay.release()
        await bus.close()

    # Event 2 is sent again before anything after it; what was acknowledged is not sent again.
    assert bus.batches == [[0, 1, 2, 3], [2, 4, 5, 6], [7, 8, 9, 10], [11]]
    async with container.sessions() as session:
        assert await session.scalar(select(func.count()).where(OutboxRow.sent_at.is_(None))) == 0


async def _published_within(container: Container, event: Event, seconds: float) -> bool:
    """Whether the broker acknowledged ``event`` (its row marked sent) within ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            while True:
                async with container.sessions() as session:
                    sent_at = await session.scalar(
                        select(OutboxRow.sent_at).where(OutboxRow.event_id == event.id)
                    )
                if sent_at is not None:
                    return True
                await asyncio.sleep(0.05)
    except TimeoutError:
        return False


class _HeldAcksBus(_RecordingBus):
    """The real bus, whose acknowledgements reach the relay only once ``release`` is set."""

    def __init__(self, settings: KafkaSettings) -> None:
        super().__init__(settings)
        self.release = asyncio.Event()

    async def send(self, messages: Sequence[tuple[str, KafkaMessage]]) -> Awaitable[list[bool]]:
        acknowledged = await super().send(messages)

        async def held() -> list[bool]:
            await self.release.wait()
            return await acknowledged

        return held()


async def test_during_a_backlog_the_next_batch_is_read_while_the_broker_acknowledges(
    container: Container, broker: DevBroker
) -> None:
    await _backlog(container, 12, keys=3)
    bus = _HeldAcksBus(container.settings.kafka)
    relay = _batches_of(5, container, bus)
    reads: list[str] = []

    def record(_c: object, _cursor: object, sql: str, *_args: object) -> None:
        if re.match(r"\s*SELECT .*\sFROM outbox\b", sql, re.DOTALL):
            reads.append(sql)

    async def read_ahead() -> bool:
        return len(reads) == 2

    event.listen(container.engine.sync_engine, "before_cursor_execute", record)
    try:
        first = asyncio.create_task(relay.publish_once())
        await eventually(read_ahead, timeout_s=10)  # the next batch, read ahead
        assert bus.batches == [[0, 1, 2, 3, 4]] and not first.done()  # acks still held
        bus.release.set()
        assert await first == 5
        assert await relay.publish_once() == 5  # the batch read ahead: [5..9]
        assert await relay.publish_once() == 2  # short: read afresh, nothing read ahead of it
        assert await relay.publish_once() == 0
    finally:
        event.remove(container.engine.sync_engine, "before_cursor_execute", record)
        await relay.release()
        await bus.close()

    assert bus.batches == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11]]
    async with container.sessions() as session:
        assert await session.scalar(select(func.count()).where(OutboxRow.sent_at.is_(None))) == 0
    assert len(await read_topic(broker.bootstrap, APPLICATION_EVENTS, expect=12)) == 12


@pytest.mark.parametrize("store_settings", ["postgresql"], indirect=True)
async def test_a_row_committed_late_below_a_batch_read_ahead_goes_out_with_the_next_fresh_read(
    container: Container, broker: DevBroker
) -> None:
    """A transaction that took its ``seq`` first and commits last: the batch read ahead
    starts after the last row being sent, so the late row is not in it; the next read from
    the front takes it, and it is published once."""
    bus = _RecordingBus(container.settings.kafka)
    relay = _batches_of(5, container, bus)
    try:
        async with container.sessions() as late, late.begin():
            add_event(late, _event("app-late", 100))
            await late.flush()  # the lowest seq, not committed yet
            await _backlog(container, 12, keys=3)
            assert await relay.publish_once() == 5  # [0..4] sent; [5..9] read ahead
        assert await relay.publish_once() == 5  # the batch read ahead, without the late row
        assert await relay.publish_once() == 3  # from the front again: the late row first
        assert await relay.publish_once() == 0
    finally:
        await relay.release()
        await bus.close()

    assert bus.batches == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [100, 10, 11]]
    records = await read_topic(broker.bootstrap, APPLICATION_EVENTS, expect=13)
    assert sorted(record_to_event(r).get_data()["n"] for r in records) == [*range(12), 100]  # type: ignore[index]


async def test_a_commit_wakes_an_idle_relay_long_before_its_next_poll(
    container: Container, broker: DevBroker
) -> None:
    container.settings.relay.poll_interval_s = 60
    stop = asyncio.Event()
    relay = asyncio.create_task(
        Relay(container.sessions, container.bus, container.settings.relay).run(stop)
    )
    try:
        await asyncio.sleep(1.0)  # the relay found nothing and sleeps until its next poll
        event = _event("app-woken", 1)
        async with transaction(container.sessions) as session:
            add_event(session, event)
        assert await _published_within(container, event, seconds=5)
    finally:
        stop.set()
        await relay
    records = await read_topic(broker.bootstrap, APPLICATION_EVENTS, expect=1)
    assert [record_to_event(r).get_id() for r in records] == [event.id]


@pytest.mark.parametrize("store_settings", ["postgresql"], indirect=True)
async def test_a_relay_process_is_woken_by_postgresql_and_listens_again_after_the_store_returns(
    container: Container, broker: DevBroker, tmp_path: Path
) -> None:
    url = make_url(container.settings.store.url)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        settings = container.settings.model_copy(deep=True)
        settings.store.url = url.set(host="127.0.0.1", port=proxy.port).render_as_string(
            hide_password=False
        )
        settings.relay.poll_interval_s = 60
        log = tmp_path / "relay.log"
        process = ywtb_process(["relay"], settings, log)
        try:
            await eventually(lambda: _logged(log, "relay started"), timeout_s=60)
            await asyncio.sleep(1.0)  # the relay found nothing and sleeps until its next poll
            before = _event("app-notified", 1)
            async with transaction(container.sessions) as session:  # from this process
                add_event(session, before)
            assert await _published_within(container, before, seconds=5)

            proxy.cut()  # the store goes away: the relay's connections, the listening one too
            await asyncio.sleep(2.0)
            proxy.restore()
            after = _event("app-notified", 2)
            async with transaction(container.sessions) as session:
                add_event(session, after)
            assert await _published_within(container, after, seconds=10)
        finally:
            process.terminate()
            await asyncio.to_thread(process.wait, 30)
    records = await read_topic(broker.bootstrap, APPLICATION_EVENTS, expect=2)
    assert [record_to_event(r).get_data() for r in records] == [
        {"application_id": "app-notified", "n": 1},
        {"application_id": "app-notified", "n": 2},
    ]


async def _logged(log: Path, message: str) -> bool:
    text = await asyncio.to_thread(lambda: log.read_text() if log.exists() else "")
    return message in text
