"""Consumer lag per worker, in messages and in seconds, and dead letters per worker.

Lag in messages is the high watermark of a partition less the group's
committed offset; lag in seconds is the age of the oldest unconsumed message,
the one at the committed offset (its record timestamp), 0 when nothing is
waiting. The end of a partition is read from a fetch (the high watermark),
which is right on every Kafka-compatible broker, rather than from ListOffsets.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from gateway.bus import kafka_errors, kafka_offset_reader
from gateway.settings import KafkaSettings
from schemas.events import all_topics, retry_topic

#: Header naming the worker that dead-lettered a message (``gateway.worker.H_WORKER``).
DEAD_LETTER_WORKER_HEADER = "ywtb_worker"


async def _close(consumer: AIOKafkaConsumer) -> None:
    """``consumer.stop()``, minus an aiokafka quirk: stopped before its internal task ever
    ran, a group-less consumer raises ``CancelledError`` although nothing cancelled us."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


async def group_lag(
    settings: KafkaSettings, group_id: str, topics: tuple[str, ...], *, timeout_s: float = 5.0
) -> list[dict[str, Any]]:
    """One row per partition: committed offset, end offset, lag and age (``age_s``) of the
    oldest unconsumed message of ``group_id``."""
    consumer = kafka_offset_reader(settings, group_id=group_id)
    rows: list[dict[str, Any]] = []
    with kafka_errors():
        try:
            await consumer.start()
            partitions = [
                TopicPartition(topic, p)
                for topic in topics
                for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            if not partitions:
                return rows
            consumer.assign(partitions)  # no group join: nothing is consumed for the group
            committed = {tp: await consumer.committed(tp) or 0 for tp in partitions}
            for tp, offset in committed.items():
                consumer.seek(tp, offset)
            oldest: dict[TopicPartition, int] = {}  # record timestamp (ms) at the committed offset

            def waiting(tp: TopicPartition) -> bool:
                end = consumer.highwater(tp)
                return end is None or (end > committed[tp] and tp not in oldest)

            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            while loop.time() < deadline and any(waiting(tp) for tp in partitions):
                batches = await consumer.getmany(timeout_ms=200, max_records=len(partitions))
                for tp, records in batches.items():
                    if records and tp not in oldest:
                        oldest[tp] = records[0].timestamp
                    if tp in oldest:
                        consumer.pause(tp)  # one record per partition is all it needs
            now_ms = time.time() * 1000
            for tp in partitions:
                end = consumer.highwater(tp)
                lag = None if end is None else max(0, end - committed[tp])
                age_s: float | None = None
                if lag == 0:
                    age_s = 0.0
                elif lag and tp in oldest:
                    age_s = round(max(0.0, now_ms - oldest[tp]) / 1000, 3)
                rows.append(
                    {
                        "group": group_id,
                        "topic": tp.topic,
                        "partition": tp.partition,
                        "committed": committed[tp],
                        "end": end,
                        "lag": lag,
                        "age_s": age_s,
                    }
                )
        finally:
            await _close(consumer)
    return rows


async def worker_lag(
    settings: KafkaSettings, workers: dict[str, tuple[str, ...]]
) -> list[dict[str, Any]]:
    """Lag of every worker's main and retry consumer groups."""
    rows = []
    for name, topics in workers.items():
        group = f"ywtb.worker.{name}"
        for row in await group_lag(settings, group, topics):
            rows.append({"worker": name, **row})
        for row in await group_lag(settings, f"{group}.retry", tuple(map(retry_topic, topics))):
            rows.append({"worker": name, **row})
    return rows


class DeadLetterTally:
    """Dead letters per (dead-letter topic, worker), counted incrementally.

    Each ``refresh`` reads only what arrived on the ``.dlq`` topics since the
    last one (at most ``max_records``), so keeping the count is cheap however
    long the topics grow. A partition that is shorter than what was counted
    (a broker that lost its data) is counted again from its beginning.
    """

    def __init__(self, settings: KafkaSettings, *, max_records: int = 10_000) -> None:
        self._settings = settings
        self._max_records = max_records
        self._positions: dict[TopicPartition, int] = {}
        self._counts: dict[TopicPartition, dict[str, int]] = {}

    def counts(self) -> dict[tuple[str, str], int]:
        """``{(dead-letter topic, worker): messages}``."""
        totals: dict[tuple[str, str], int] = {}
        for tp, per_worker in self._counts.items():
            for worker, n in per_worker.items():
                totals[(tp.topic, worker)] = totals.get((tp.topic, worker), 0) + n
        return totals

    async def refresh(self, *, timeout_s: float = 5.0) -> dict[tuple[str, str], int]:
        """Count what is new on the dead-letter topics; return ``counts()``."""
        consumer = kafka_offset_reader(self._settings, group_id=None)
        with kafka_errors():
            try:
                await consumer.start()
                await self._read_new(consumer, timeout_s)
            finally:  # also after a failed start: an unclosed consumer warns when collected
                await _close(consumer)
        return self.counts()

    async def _read_new(self, consumer: AIOKafkaConsumer, timeout_s: float) -> None:
        partitions = [
            TopicPartition(topic, p)
            for topic in all_topics()
            if topic.endswith(".dlq")
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            return
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, self._positions.get(tp, 0))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        read = 0
        done: set[TopicPartition] = set()
        while loop.time() < deadline and read < self._max_records and len(done) < len(partitions):
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            for tp, records in batches.items():
                per_worker = self._counts.setdefault(tp, {})
                for record in records:
                    worker = dict(record.headers).get(DEAD_LETTER_WORKER_HEADER, b"")
                    name = worker.decode("utf-8", "replace") or "unknown"
                    per_worker[name] = per_worker.get(name, 0) + 1
                    self._positions[tp] = record.offset + 1
                read += len(records)
            for tp in partitions:
                end = consumer.highwater(tp)
                if end is None:
                    continue
                if end < self._positions.get(tp, 0):  # the partition lost its data: recount
                    self._positions[tp], self._counts[tp] = 0, {}
                    consumer.seek(tp, 0)
                    continue
                if self._positions.get(tp, 0) >= end:
                    done.add(tp)
