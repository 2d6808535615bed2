"""Cutting slow clients at the connection: a deadline for a request's headers.

uvicorn bounds idle keep-alive connections but not a client that trickles its
request line and headers (or opens a connection and sends nothing). This
protocol gives every request ``header_timeout_s`` from its first byte (or from
the connection, for the first) to finish its headers, then closes the
connection. The body's own deadline is ``gateway.api.limits.BodyLimit``'s.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def header_timeout_protocol(header_timeout_s: float) -> type[H11Protocol]:
    """An h11 protocol class for ``uvicorn.Config(http=...)`` with this headers deadline."""

    class HeaderTimeoutProtocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None
        _armed_for: Any = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._header_timer is None and self.conn.their_state is h11.IDLE:
                self._arm()
            super().data_received(data)
            if self.cycle is not self._armed_for:
                self._disarm()  # the headers are in; the next request gets its own deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._armed_for = self.cycle
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            # A new cycle means the headers of the request arrived in time.
            late = self.cycle is self._armed_for and self.conn.their_state is h11.IDLE
            if late and not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutProtocol
