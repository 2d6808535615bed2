"""Reading a topic from the real broker, the way an outside consumer would."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition


async def read_topic(
    bootstrap: str, topic: str, *, expect: int, timeout_s: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """All records of ``topic`` from the beginning, once at least ``expect`` have arrived.

    Waits up to ``timeout_s`` for them, then returns what it has (the caller asserts).
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        partitions: set[int] | None = None
        while not partitions and loop.time() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                await consumer._client.force_metadata_update()
                await asyncio.sleep(0.1)
        if not partitions:
            return records
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        await consumer.seek_to_beginning()
        while len(records) < expect and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for batch in batches.values():
                records.extend(batch)
        # A short extra read shows duplicates that arrive after the expected count.
        for batch in (await consumer.getmany(timeout_ms=500)).values():
            records.extend(batch)
        return records
    finally:
        await consumer.stop()
