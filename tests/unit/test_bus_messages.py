"""The relay's Kafka message of an outbox row: the CloudEvents SDK's binary mode, built directly."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.exceptions import CloudEventValidationError
from cloudevents.core.v1.event import CloudEvent

from gateway.bus import JSON_FORMAT, outbox_to_message, record_to_event
from gateway.protect import json_bytes
from gateway.store.models import OutboxRow

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _sdk_message(row: OutboxRow) -> ce_kafka.KafkaMessage:
    """What the CloudEvents SDK makes of the row (how the relay built its messages before)."""
    attributes: dict[str, Any] = {
        "id": row.event_id,
        "source": row.source,
        "type": row.type,
        "time": row.time,
        "datacontenttype": "application/json",
    }
    if row.subject:
        attributes["subject"] = row.subject
    if row.traceparent:
        attributes["traceparent"] = row.traceparent
    event = CloudEvent(attributes, row.data)
    return ce_kafka.to_binary(event, JSON_FORMAT, key_mapper=lambda _e: row.key)


def _consumed(message: ce_kafka.KafkaMessage) -> BaseCloudEvent:
    """The event a worker reads from ``message`` once on a topic."""
    key = message.key.encode() if isinstance(message.key, str) else message.key
    record = ConsumerRecord(
        topic="t",
        partition=0,
        offset=0,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=message.value,
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=0,
        headers=list(message.headers.items()),
    )
    return record_to_event(record)


def _row(**fields: Any) -> OutboxRow:
    base: dict[str, Any] = {
        "event_id": "0b9e6c1e-3a39-4bd4-9d8e-5c2b1f0e7a11",
        "topic": "ywtb.application.events",
        "key": "app-1",
        "type": "cn.ywtb.application.received",
        "source": "/ywtb-connector",
        "subject": None,
        "time": datetime(2026, 12, 6, 4, 15, 0, 123456, tzinfo=UTC),
        "data": {"n": 1},
        "traceparent": None,
    }
    return OutboxRow(**(base | fields))


@pytest.mark.parametrize(
    "row",
    [
        _row(),
        _row(subject="app-1", traceparent=TRACEPARENT),
        _row(subject="app-2", time=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
        _row(time=datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=8)))),
        _row(
            traceparent=TRACEPARENT,
            data={"申请人": "张三", "amount": 1.5, "items": [None, True, {"x": '\u2028"'}]},
        ),
    ],
)
def test_the_message_has_the_sdks_headers_and_key_and_the_same_data(row: OutboxRow) -> None:
    ours, sdk = outbox_to_message(row), _sdk_message(row)

    assert list(ours.headers.items()) == list(sdk.headers.items())  # names, values, order
    assert ours.key == sdk.key
    assert json.loads(ours.value) == json.loads(sdk.value) == row.data
    assert ours.value == json_bytes(row.data)  # the JSON the outbox stores, published as is
    consumed = _consumed(ours)  # what a worker reads
    assert consumed.get_data() == row.data
    assert consumed.get_attributes() == _consumed(sdk).get_attributes()


def test_stored_json_bytes_are_published_unchanged() -> None:
    stored = json_bytes({"申请人": "张三"})
    message = outbox_to_message(_row(data=stored))

    assert message.value == stored == '{"申请人":"张三"}'.encode()


@pytest.mark.parametrize("field", ["event_id", "source", "type"])
def test_an_empty_required_attribute_is_refused_as_the_sdk_refuses_it(field: str) -> None:
    row = _row(**{field: ""})
    with pytest.raises(CloudEventValidationError):
        _sdk_message(row)
    with pytest.raises(CloudEventValidationError):
        outbox_to_message(row)
