"""Platform answers are read within bounds: size and JSON depth, their errors translated."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from adapters import bounded
from adapters.licence.client import LicenceClient
from adapters.project.client import ProjectClient
from schemas.errors import PlatformRejected

PROJECT = "2020-310115-44-02-000077"


def nested(depth: int) -> bytes:
    return b'{"a": ' + b"[" * depth + b"]" * depth + b"}"


def test_depth_is_measured_outside_strings() -> None:
    assert not bounded.json_depth_exceeds(b'{"a": [1, {"b": [2]}]}', 4)
    assert bounded.json_depth_exceeds(b'{"a": [1, {"b": [2]}]}', 3)
    assert not bounded.json_depth_exceeds(b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', 2)
    assert not bounded.json_depth_exceeds(b'{"a": "\\"[[[[[[[[[[[["}', 2)
    assert not bounded.json_depth_exceeds(b"[]" * 100_000, 1)


def test_ten_thousand_levels_are_a_value_error_not_a_recursion_error() -> None:
    with pytest.raises(ValueError, match="deeper than 32"):
        bounded.loads(nested(10_000))
    assert bounded.loads(nested(20)) == json.loads(nested(20))


async def chunked(body: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def project_client(answer: httpx.Response) -> ProjectClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: answer))
    return ProjectClient(
        http=http, base_url="http://project.test", app_id="k", app_secret="s", attempts=1
    )


async def test_a_deeply_nested_project_answer_is_a_rejection() -> None:
    client = project_client(httpx.Response(200, content=nested(10_000)))
    with pytest.raises(PlatformRejected, match="deeper than"):
        await client.fetch_project(PROJECT)


async def test_an_oversized_project_answer_is_abandoned_and_a_rejection() -> None:
    huge = b'{"code": "0000", "msg": "' + b"x" * (bounded.MAX_ANSWER_BYTES + 1) + b'"}'
    for answer in (
        httpx.Response(200, content=huge),  # declared length
        httpx.Response(200, content=chunked(huge)),  # no length: counted while read
        httpx.Response(200, content=gzip.compress(huge), headers={"Content-Encoding": "gzip"}),
    ):
        with pytest.raises(PlatformRejected) as raised:
            await project_client(answer).fetch_project(PROJECT)
        assert raised.value.platform_code == "answer_too_large"


async def test_a_compressed_answer_within_bounds_is_read() -> None:
    body = json.dumps({"code": "4000", "msg": "参数错误"}, ensure_ascii=False).encode()
    answer = httpx.Response(200, content=gzip.compress(body), headers={"Content-Encoding": "gzip"})
    with pytest.raises(PlatformRejected) as raised:
        await project_client(answer).fetch_project(PROJECT)
    assert raised.value.platform_code == "4000"  # read and understood, not "unreadable"


async def test_an_oversized_soap_answer_is_a_rejection() -> None:
    huge = b"<x>" + b"y" * (bounded.MAX_ANSWER_BYTES + 1) + b"</x>"
    http = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda request: httpx.Response(200, content=huge))
    )
    client = LicenceClient(
        base_url="http://licence.test", username="u", password="p", http=http, attempts=1
    )
    with pytest.raises(PlatformRejected) as raised:
        await client.fetch_licence("91310115MA1HW74707")
    assert raised.value.platform_code == "answer_too_large"
