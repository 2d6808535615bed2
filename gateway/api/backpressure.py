"""Back-pressure: a bound on the requests one API process handles at once.

Beyond the limit a request is answered at once with 503 problem+json and
``Retry-After`` instead of queueing behind the others (where it would wait on
the store's pool, or on a starved CPU, and time out much later). The limit is
``max_in_flight`` while the process keeps up; while its event loop runs late
(more than ``loop_lag_target_s`` behind: the host is short of CPU) it shrinks,
down to half of ``max_in_flight``, and grows back as the loop recovers
(additive increase, multiplicative decrease, as TCP does). ``Retry-After``
grows as the limit shrinks (1 to 3 times ``retry_after_s``), so that clients
spread their retries when the process can take fewer. ``/healthz`` and
``/readyz`` are not counted, so a saturated process still says it is alive.
"""

from __future__ import annotations

import asyncio
import math
import time

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api.problems import problem_for
from schemas.errors import Overloaded

#: Paths answered whatever the load.
UNCOUNTED = frozenset({"/healthz", "/readyz"})
#: How often the event loop's lateness is measured.
TICK_S = 0.1
#: The longest Retry-After, in multiples of ``retry_after_s``.
MAX_BACKOFF = 5


class InFlightLimit:
    """ASGI middleware: at most ``limit`` HTTP requests in the app at once."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_in_flight: int,
        retry_after_s: int,
        loop_lag_target_s: float = 0.2,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.app = app
        self.max_in_flight = max_in_flight
        self.retry_after_s = retry_after_s
        self.loop_lag_target_s = loop_lag_target_s
        self.in_flight = 0
        self.limit = float(max_in_flight)
        self._watch: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNCOUNTED:
            await self.app(scope, receive, send)
            return
        if self._watch is None:
            self._watch = asyncio.create_task(self._watch_loop(), name="in-flight-limit")
        if self.in_flight >= int(self.limit):
            error = Overloaded(
                f"{self.in_flight} requests in flight, the most this process takes now",
                retry_after_s=self.retry_after(),
            )
            await problem_for(Request(scope), error)(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

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
