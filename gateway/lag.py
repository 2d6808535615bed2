"""Consumer lag per worker: how many messages each consumer group has yet to commit.

The end of a partition is read from a fetch (the high watermark), which is
right on every Kafka-compatible broker, rather than from ListOffsets.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition

from gateway.bus import kafka_consumer, kafka_errors
from gateway.settings import KafkaSettings
from schemas.events import retry_topic


async def group_lag(
    settings: KafkaSettings, group_id: str, topics: tuple[str, ...], *, timeout_s: float = 5.0
) -> list[dict[str, Any]]:
    """One row per partition: committed offset, end offset and lag of ``group_id``."""
    consumer = kafka_consumer(settings, group_id=group_id)
    rows: list[dict[str, Any]] = []
    with kafka_errors():
        await consumer.start()
        try:
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
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            while loop.time() < deadline and any(
                consumer.highwater(tp) is None for tp in partitions
            ):
                await consumer.getmany(timeout_ms=200, max_records=1)
            for tp in partitions:
                end = consumer.highwater(tp)
                rows.append(
                    {
                        "group": group_id,
                        "topic": tp.topic,
                        "partition": tp.partition,
                        "committed": committed[tp],
                        "end": end,
                        "lag": None if end is None else max(0, end - committed[tp]),
                    }
                )
        finally:
            await consumer.stop()
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
