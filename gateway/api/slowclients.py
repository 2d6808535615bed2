"""Cutting slow clients at the connection: a deadline for a request's headers.

uvicorn bounds idle keep-alive connections but not a client that trickles its
request line and headers (or opens a connection and sends nothing). This
protocol (uvicorn's httptools one, the fast parser) gives every request
``header_timeout_s`` from its first byte (or from the connection, for the
first) to finish its headers, then closes the connection. The body's own
deadline is ``gateway.api.limits.BodyLimit``'s.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def header_timeout_protocol(header_timeout_s: float) -> type[HttpToolsProtocol]:
    """An httptools protocol class for ``uvicorn.Config(http=...)`` with this headers deadline."""

    class HeaderTimeoutProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            if self._header_timer is None:  # the first request's deadline runs from the connection
                self._arm()
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._disarm()  # the headers are in; the next request gets its own deadline
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutProtocol
