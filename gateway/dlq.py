"""Dead letters: list, show and replay what workers could not deliver (``ywtb dlq``).

A dead letter keeps the original CloudEvent (headers and payload) and the
worker's notes (``ywtb_*`` headers: error, attempts, history). Replaying sends
the original message to ``<topic>.retry`` addressed to the worker that failed,
with its event id unchanged, so the inbox still turns a duplicate into a no-op.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from gateway.bus import kafka_consumer, kafka_errors, kafka_producer
from gateway.settings import KafkaSettings
from gateway.worker import (
    H_ATTEMPT,
    H_DEAD_AT,
    H_DUE_AT,
    H_ERROR,
    H_HISTORY,
    H_TOPIC,
    H_WORKER,
    WORKER_HEADER_PREFIX,
)
from schemas.errors import NotFound
from schemas.events import all_topics, retry_topic


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    headers: dict[str, bytes] = field(repr=False)

    def header(self, name: str) -> str:
        return self.headers.get(name, b"").decode("utf-8", "replace")

    @property
    def event_id(self) -> str:
        return self.header("ce_id")

    @property
    def worker(self) -> str:
        return self.header(H_WORKER)

    def summary(self) -> dict[str, Any]:
        dead_at = self.header(H_DEAD_AT)
        return {
            "event_id": self.event_id,
            "type": self.header("ce_type"),
            "key": self.key,
            "worker": self.worker,
            "original_topic": self.header(H_TOPIC),
            "attempts": int(self.header(H_ATTEMPT) or 0),
            "error": self.header(H_ERROR),
            "dead_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(dead_at)))
            if dead_at
            else None,
            "at": f"{self.topic}/{self.partition}/{self.offset}",
        }

    def details(self) -> dict[str, Any]:
        payload: Any
        try:
            payload = json.loads(self.value)
        except ValueError:
            payload = self.value.decode("utf-8", "replace")
        return {
            **self.summary(),
            "history": json.loads(self.header(H_HISTORY) or "[]"),
            "headers": {k: v.decode("utf-8", "replace") for k, v in self.headers.items()},
            "payload": payload,
        }


async def read_dead_letters(settings: KafkaSettings, *, idle_s: float = 1.0) -> list[DeadLetter]:
    """Every message in every dead-letter topic, oldest first per partition."""
    dead_topics = [t for t in all_topics() if t.endswith(".dlq")]
    consumer = kafka_consumer(settings, group_id=None)
    letters: list[DeadLetter] = []
    with kafka_errors():
        await consumer.start()
        try:
            partitions = [
                TopicPartition(topic, p)
                for topic in dead_topics
                for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            if not partitions:
                return letters
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            while True:
                batches = await consumer.getmany(timeout_ms=int(idle_s * 1000))
                if not batches:
                    break
                for records in batches.values():
                    letters.extend(
                        DeadLetter(
                            topic=r.topic,
                            partition=r.partition,
                            offset=r.offset,
                            key=r.key.decode() if r.key else None,
                            value=r.value or b"",
                            headers=dict(r.headers),
                        )
                        for r in records
                    )
        finally:
            await consumer.stop()
    return letters


def latest(letters: list[DeadLetter], event_id: str, worker: str | None = None) -> DeadLetter:
    """The newest dead letter of ``event_id`` (of ``worker``, when given)."""
    matching = [
        d for d in letters if d.event_id == event_id and (worker is None or d.worker == worker)
    ]
    if not matching:
        raise NotFound(f"no dead letter with event id {event_id}")
    return max(matching, key=lambda d: float(d.header(H_DEAD_AT) or 0))


async def replay(settings: KafkaSettings, letter: DeadLetter) -> str:
    """Send the original message back to its worker through the retry topic; return the topic."""
    original = {k: v for k, v in letter.headers.items() if not k.startswith(WORKER_HEADER_PREFIX)}
    headers = {
        **original,
        H_WORKER: letter.worker.encode(),
        H_TOPIC: letter.header(H_TOPIC).encode(),
        H_ATTEMPT: b"1",
        H_DUE_AT: str(time.time()).encode(),
        H_HISTORY: letter.headers.get(H_HISTORY, b"[]"),
    }
    target = retry_topic(letter.header(H_TOPIC))
    producer = kafka_producer(settings)
    with kafka_errors():
        await producer.start()
        try:
            await producer.send_and_wait(
                target,
                value=letter.value,
                key=letter.key.encode() if letter.key else None,
                headers=list(headers.items()),
            )
        finally:
            await producer.stop()
    return target


def run_dlq_command(
    settings: KafkaSettings, action: str, event_ids: list[str], worker: str | None
) -> list[dict[str, Any]]:
    """``ywtb dlq list|show|replay``: what to print, one dict per dead letter."""

    async def go() -> list[dict[str, Any]]:
        letters = await read_dead_letters(settings)
        if action == "list":
            return [d.summary() for d in letters]
        chosen = [latest(letters, event_id, worker) for event_id in event_ids]
        if action == "show":
            return [d.details() for d in chosen]
        results = []
        for letter in chosen:
            target = await replay(settings, letter)
            results.append(
                {"event_id": letter.event_id, "worker": letter.worker, "replayed_to": target}
            )
        return results

    return asyncio.run(go())
