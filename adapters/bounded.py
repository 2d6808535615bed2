"""Reading what a peer sends within bounds: answer size, and JSON nesting depth.

A platform's answer is streamed and abandoned beyond ``MAX_ANSWER_BYTES``
(``AnswerTooLarge``, translated by ``adapters.resilience.httpx_errors``); JSON is
checked for depth before it is parsed, so a 10 000-deep document is a
``ValueError`` like any other unreadable body, never a ``RecursionError``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

#: Largest platform answer read (decompressed); the platforms answer a few KiB.
MAX_ANSWER_BYTES = 4 * 1024 * 1024
#: Deepest JSON nesting read from a platform (the envelopes nest three levels).
MAX_JSON_DEPTH = 32

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_EMPTY_PAIR = re.compile(rb"\[\]|\{\}")
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


class AnswerTooLarge(Exception):
    """A platform's answer exceeded ``MAX_ANSWER_BYTES``."""


def json_depth_exceeds(raw: bytes, max_depth: int) -> bool:
    """Whether arrays and objects in ``raw`` nest deeper than ``max_depth``.

    Strings are blanked out, then innermost empty pairs are removed round by
    round (in C, each round linear): the number of rounds is the depth.
    """
    brackets = _STRING.sub(b'""', raw).translate(None, _NOT_BRACKET)
    for _ in range(max_depth):
        if not brackets:
            return False
        brackets = _EMPTY_PAIR.sub(b"", brackets)
    return bool(brackets) and _EMPTY_PAIR.search(brackets) is not None


def loads(raw: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` that refuses documents nested deeper than ``max_depth`` (``ValueError``)."""
    if json_depth_exceeds(raw, max_depth):
        raise ValueError(f"JSON nested deeper than {max_depth} levels")
    return json.loads(raw)


async def send_bounded(
    http: httpx.AsyncClient, request: httpx.Request, *, max_bytes: int = MAX_ANSWER_BYTES
) -> httpx.Response:
    """Send ``request``; the answer is read up to ``max_bytes`` (else ``AnswerTooLarge``)."""
    response = await http.send(request, stream=True)
    try:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise AnswerTooLarge(f"answer of {declared} bytes, over {max_bytes}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise AnswerTooLarge(f"answer over {max_bytes} bytes")
            chunks.append(chunk)
    finally:
        await response.aclose()
    # The body is decoded already: the copy drops the encoding that described it.
    headers = [
        (name, value)
        for name, value in response.headers.multi_items()
        if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")
    ]
    return httpx.Response(
        response.status_code,
        headers=headers,
        content=b"".join(chunks),
        request=request,
        extensions=response.extensions,
    )
