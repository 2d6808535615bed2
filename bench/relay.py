"""Outbox relay throughput against a bare aiokafka producer, on one development broker.

Two scenarios of ``make bench`` (``bench/run.py``): the outbox on SQLite (the
sandbox's store) and on PostgreSQL (production's). Both publish the same
CloudEvents messages to the same broker in the same run; the baseline skips
the store (no outbox rows, no marking sent), so the ratio is the price of the
transactional outbox.
"""

from __future__ import annotations

import asyncio
import platform
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaProducer
from sqlalchemy import select

from gateway.bus import PRODUCER_BATCH_BYTES, KafkaBus, outbox_to_message
from gateway.devbroker import DevBroker
from gateway.outbox import add_event
from gateway.protect import install, keyring_of
from gateway.relay import Relay
from gateway.settings import KafkaSettings, RelaySettings, Settings, StoreSettings
from gateway.store.db import open_store, transaction
from gateway.store.models import OutboxRow
from schemas.events import APPLICATION_EVENTS, ApplicationEvent, Event


def _events(count: int, run: str) -> list[Event]:
    return [
        Event(
            topic=APPLICATION_EVENTS,
            type=ApplicationEvent.RECEIVED,
            key=f"{run}-{n % 50}",
            data={"n": n, "district_code": "310115"},
        )
        for n in range(count)
    ]


async def _baseline(bootstrap: str, events: list[Event]) -> float:
    """Seconds for a bare producer to publish ``events`` and have them acknowledged."""
    # The relay's own producer settings (acks, linger, batch size): only the store differs.
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=PRODUCER_BATCH_BYTES
    )
    await producer.start()
    try:
        rows = [
            OutboxRow(
                event_id=e.id,
                topic=e.topic,
                key=e.key,
                type=e.type,
                source=e.source,
                subject=None,
                time=e.time,
                data=e.data,
            )
            for e in events
        ]
        started = time.perf_counter()
        futures = []
        for row in rows:
            message = outbox_to_message(row)
            futures.append(
                await producer.send(
                    row.topic,
                    message.value,
                    key=row.key.encode(),
                    headers=list(message.headers.items()),
                )
            )
        await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def _relay(bootstrap: str, events: list[Event], store: StoreSettings) -> float:
    """Seconds for the relay to publish ``events`` from the outbox and mark them sent."""
    engine, sessions = await open_store(store)
    bus = KafkaBus(KafkaSettings(bootstrap=bootstrap))
    try:
        async with transaction(sessions) as session:
            for event in events:
                add_event(session, event)
        stop = asyncio.Event()
        relay = Relay(sessions, bus, RelaySettings(poll_interval_s=0.01, batch_size=500))
        started = time.perf_counter()
        task = asyncio.create_task(relay.run(stop))
        unsent = select(OutboxRow.seq).where(OutboxRow.sent_at.is_(None)).limit(1)
        while True:  # a cheap look (one index probe, not a count) so as not to slow the relay
            async with sessions() as session:
                if await session.scalar(unsent) is None:
                    break
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        stop.set()
        await task
        return elapsed
    finally:
        await bus.close()
        await engine.dispose()


async def relay_vs_producer(
    count: int, new_store: Callable[[], Awaitable[StoreSettings]] | None = None, rounds: int = 3
) -> dict[str, object]:
    """Best of ``rounds`` runs of each, alternating, so that a busy moment of a shared
    machine does not decide the ratio. Each relay run has an empty store of its own:
    ``new_store``'s, or a SQLite file."""
    install(keyring_of(Settings().protection))  # outbox data is stored encrypted (sandbox keys)
    baseline: list[float] = []
    relayed: list[float] = []
    with DevBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        bus = KafkaBus(KafkaSettings(bootstrap=broker.bootstrap))
        await bus.ensure_topics([APPLICATION_EVENTS])
        await bus.close()
        for n in range(rounds):
            baseline.append(await _baseline(broker.bootstrap, _events(count, f"baseline{n}")))
            store = (
                await new_store()
                if new_store is not None
                else StoreSettings(url=f"sqlite+aiosqlite:///{Path(tmp) / f'{n}.db'}")
            )
            relayed.append(await _relay(broker.bootstrap, _events(count, f"relay{n}"), store))
    return {
        "benchmark": "outbox relay vs bare aiokafka producer",
        "store": "PostgreSQL" if new_store is not None else "SQLite",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} Python {platform.python_version()}",
        "events": count,
        "rounds": rounds,
        "baseline_events_per_s": round(count / min(baseline)),
        "relay_events_per_s": round(count / min(relayed)),
        "relay_cost_ratio": round(min(relayed) / min(baseline), 2),
        "baseline_s": [round(s, 3) for s in baseline],
        "relay_s": [round(s, 3) for s in relayed],
    }
