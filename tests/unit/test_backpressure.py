"""The in-flight limit: a bounded line behind it, first come first served; it adapts to a late
event loop, within bounds, and tells the clients it refuses when to come back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from gateway.api.backpressure import MAX_BACKOFF, InFlightLimit


async def app(scope: object, receive: object, send: object) -> None:
    raise AssertionError("not called")


def test_a_late_loop_shrinks_the_limit_to_half_and_it_grows_back() -> None:
    limit = InFlightLimit(app, max_in_flight=16, retry_after_s=1, loop_lag_target_s=0.2)
    assert limit.limit == 16 and limit.retry_after() == 1

    limit.adjust(0.5)
    assert 11 <= limit.limit < 12
    for _ in range(10):
        limit.adjust(0.5)
    assert limit.limit == 8  # never below half
    assert limit.retry_after() == 3  # fewer places: come back later

    for _ in range(100):
        limit.adjust(0.01)
    assert limit.limit == 16
    assert limit.retry_after() == 1


def test_retry_after_is_bounded() -> None:
    limit = InFlightLimit(app, max_in_flight=1, retry_after_s=2, loop_lag_target_s=0.2)
    for _ in range(10):
        limit.adjust(1.0)
    assert 2 <= limit.retry_after() <= MAX_BACKOFF * 2


class Gate:
    """An ASGI app whose requests wait until let through; it counts them."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.entered = 0
        self.most = 0
        self.inside = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.entered += 1
        self.inside += 1
        self.most = max(self.most, self.inside)
        try:
            await self.open.wait()
        finally:
            self.inside -= 1
        await PlainTextResponse(scope["path"])(scope, receive, send)


def client_of(limit: InFlightLimit) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=limit), base_url="http://api")


async def eventually(check: Callable[[], bool]) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not reached")


async def test_requests_beyond_the_limit_wait_in_line_and_go_in_order() -> None:
    gate = Gate()
    limit = InFlightLimit(gate, max_in_flight=2, retry_after_s=1, max_queued=3, queue_wait_s=30)
    async with client_of(limit) as api:
        first = [asyncio.create_task(api.get(f"/a{n}")) for n in range(2)]
        await eventually(lambda: gate.entered == 2)
        waiting = []
        for n in range(3):
            waiting.append(asyncio.create_task(api.get(f"/b{n}")))
            await eventually(lambda n=n: len(limit._line) == n + 1)
        refused = await api.get("/c")  # the line is full: refused at once
        assert gate.entered == 2

        gate.open.set()
        answers = [await t for t in first + waiting]

    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["Retry-After"] == "1"
    assert [a.text for a in answers] == ["/a0", "/a1", "/b0", "/b1", "/b2"]
    assert gate.most == 2  # never more than the limit inside
    assert limit.in_flight == 0 and not limit._line


async def test_a_request_waiting_longer_than_queue_wait_s_is_refused() -> None:
    gate = Gate()
    limit = InFlightLimit(gate, max_in_flight=1, retry_after_s=2, max_queued=5, queue_wait_s=0.2)
    async with client_of(limit) as api:
        inside = asyncio.create_task(api.get("/a"))
        await eventually(lambda: gate.entered == 1)
        waited = await api.get("/b")
        assert not limit._line  # it left the line
        gate.open.set()
        assert (await inside).status_code == 200
        after = await api.get("/c")  # its place was not lost

    assert waited.status_code == 503 and waited.headers["Retry-After"] == "2"
    assert after.status_code == 200
    assert gate.entered == 2 and limit.in_flight == 0


async def test_a_client_gone_while_in_line_leaves_no_place_taken() -> None:
    gate = Gate()
    limit = InFlightLimit(gate, max_in_flight=1, retry_after_s=1, max_queued=5, queue_wait_s=30)
    async with client_of(limit) as api:
        inside = asyncio.create_task(api.get("/a"))
        await eventually(lambda: gate.entered == 1)
        gone = asyncio.create_task(api.get("/b"))
        await eventually(lambda: len(limit._line) == 1)
        gone.cancel()
        await eventually(lambda: not limit._line)
        gate.open.set()
        assert (await inside).status_code == 200
        assert (await api.get("/c")).status_code == 200

    assert gate.entered == 2 and limit.in_flight == 0


async def test_places_freed_by_a_recovering_loop_go_to_those_in_line() -> None:
    gate = Gate()
    limit = InFlightLimit(gate, max_in_flight=4, retry_after_s=1, max_queued=8, queue_wait_s=30)
    for _ in range(5):
        limit.adjust(1.0)  # a late loop: the limit shrinks to 2
    async with client_of(limit) as api:
        tasks = [asyncio.create_task(api.get(f"/{n}")) for n in range(4)]
        await eventually(lambda: gate.entered == 2 and len(limit._line) == 2)
        for _ in range(4):
            limit.adjust(0.0)  # it recovers: the limit grows back to 4
        await eventually(lambda: gate.entered == 4)
        gate.open.set()
        assert [r.status_code for r in await asyncio.gather(*tasks)] == [200] * 4
