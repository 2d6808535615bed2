"""Replays are paced: at most ``dlq.replay_rate_per_s`` sends per second from a process."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import async_sessionmaker

from gateway.dlq import DeadLetters
from gateway.settings import DeadLetterSettings, KafkaSettings
from gateway.store.db import Sessions


async def test_sends_are_spaced_by_the_rate_even_when_asked_at_once() -> None:
    now = [100.0]
    sent_at: list[float] = []

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    service = DeadLetters(
        KafkaSettings(),
        Sessions(async_sessionmaker()),
        DeadLetterSettings(replay_rate_per_s=4),
        sleep=sleep,
        clock=lambda: now[0],
    )

    async def send() -> None:
        await service._paced()
        sent_at.append(now[0])

    await asyncio.gather(*(send() for _ in range(9)))
    assert sent_at == [100.0 + n * 0.25 for n in range(9)]
    now[0] += 10  # idle for a while: no debt carried over
    await send()
    assert sent_at[-1] == now[0]
