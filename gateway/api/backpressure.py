"""Back-pressure: a bound on the requests one API process handles at once.

At most ``max_in_flight`` requests run in the app; the next ``max_queued`` wait
in line, first come first served, for at most ``queue_wait_s``; beyond the line,
or after that wait, a request is answered 503 problem+json with ``Retry-After``.
A short line keeps a burst from turning into a storm of retries (each answered
refusal costs CPU the work needed, and a client told to retry at once comes
straight back), while the bounded wait and the bounded line keep memory and
latency bounded: nothing waits on the store's pool or on a starved CPU until it
times out much later.

The limit is ``max_in_flight`` while the process keeps up; while its event loop
runs late (more than ``loop_lag_target_s`` behind: the host is short of CPU) it
shrinks, down to half of ``max_in_flight``, and grows back as the loop recovers
(additive increase, multiplicative decrease, as TCP does). ``Retry-After`` grows
as the limit shrinks (1 to 3 times ``retry_after_s``), so that clients spread
their retries when the process can take fewer. ``/healthz`` and ``/readyz`` are
not counted, so a saturated process still says it is alive.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api.problems import send_problem
from schemas.errors import Overloaded

#: Paths answered whatever the load.
UNCOUNTED = frozenset({"/healthz", "/readyz"})
#: How often the event loop's lateness is measured.
TICK_S = 0.1
#: The longest Retry-After, in multiples of ``retry_after_s``.
MAX_BACKOFF = 5


class InFlightLimit:
    """ASGI middleware: at most ``limit`` HTTP requests in the app at once, a bounded line
    behind them."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_in_flight: int,
        retry_after_s: int,
        loop_lag_target_s: float = 0.2,
        max_queued: int = 0,
        queue_wait_s: float = 0.0,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.app = app
        self.max_in_flight = max_in_flight
        self.retry_after_s = retry_after_s
        self.loop_lag_target_s = loop_lag_target_s
        self.max_queued = max_queued
        self.queue_wait_s = queue_wait_s
        self.in_flight = 0
        self.limit = float(max_in_flight)
        self._line: deque[asyncio.Future[None]] = deque()
        self._watch: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNCOUNTED:
            await self.app(scope, receive, send)
            return
        if self._watch is None:
            self._watch = asyncio.create_task(self._watch_loop(), name="in-flight-limit")
        if not await self._admitted():
            error = Overloaded(
                f"{self.in_flight} requests in flight and {len(self._line)} waiting, "
                "the most this process takes now",
                retry_after_s=self.retry_after(),
            )
            await send_problem(scope, receive, send, error)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self._release()

    async def _admitted(self) -> bool:
        """Take a place in the app, waiting in line for one if need be; False if refused."""
        if self.in_flight < int(self.limit) and not self._line:
            self.in_flight += 1
            return True
        if len(self._line) >= self.max_queued:
            return False
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._line.append(turn)
        try:
            async with asyncio.timeout(self.queue_wait_s):
                await turn
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # handed a place just now: give it on
                self._release()
            else:
                self._leave(turn)
            raise
        if turn.done() and not turn.cancelled():
            return True  # handed over by ``_release``: ``in_flight`` already counts it
        self._leave(turn)
        return False

    def _leave(self, turn: asyncio.Future[None]) -> None:
        turn.cancel()
        if turn in self._line:
            self._line.remove(turn)

    def _release(self) -> None:
        self.in_flight -= 1
        self._admit_waiting()

    def _admit_waiting(self) -> None:
        """Hand the free places to the first in line."""
        while self._line and self.in_flight < int(self.limit):
            turn = self._line.popleft()
            if not turn.done():
                self.in_flight += 1
                turn.set_result(None)

    def retry_after(self) -> int:
        """``retry_after_s``, longer in proportion as the limit has shrunk."""
        shrunk = 2 * self.max_in_flight / max(self.limit, 1.0) - 1  # 1 when not shrunk
        return min(MAX_BACKOFF * self.retry_after_s, math.ceil(self.retry_after_s * shrunk))

    async def _watch_loop(self) -> None:
        """Adjust the limit to how late the event loop wakes up."""
        while True:
            started = time.monotonic()
            await asyncio.sleep(TICK_S)
            self.adjust(time.monotonic() - started - TICK_S)

    def adjust(self, lag_s: float) -> None:
        if lag_s > self.loop_lag_target_s:
            self.limit = max(self.max_in_flight / 2, 1.0, self.limit * 0.7)
        else:
            self.limit = min(float(self.max_in_flight), self.limit + 0.5)
            self._admit_waiting()
