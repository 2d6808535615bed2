"""Back-pressure: a bound on the requests one API process handles at once.

Beyond ``max_in_flight`` a request is answered at once with 503 problem+json
and ``Retry-After`` instead of queueing behind the others (where it would wait
on the store's pool and time out much later). ``/healthz`` and ``/readyz`` are
not counted, so a saturated process still says it is alive.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api.problems import error_response
from schemas.errors import Overloaded

#: Paths answered whatever the load.
UNCOUNTED = frozenset({"/healthz", "/readyz"})


class InFlightLimit:
    """ASGI middleware: at most ``max_in_flight`` HTTP requests in the app at once."""

    def __init__(self, app: ASGIApp, *, max_in_flight: int, retry_after_s: int) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.app = app
        self.max_in_flight = max_in_flight
        self.retry_after_s = retry_after_s
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNCOUNTED:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            error = Overloaded(
                f"{self.in_flight} requests in flight, the most this process takes at once",
                retry_after_s=self.retry_after_s,
            )
            await error_response(Request(scope), error)(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
