"""Running long-lived tasks until SIGINT/SIGTERM: shared by the CLI commands and the sandbox."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from gateway.api.slowclients import header_timeout_protocol
from gateway.settings import LimitsSettings

_GRACEFUL_SHUTDOWN_S = 3  # requests in flight at SIGTERM get this long to finish


class QuietSignalsServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host (we stop it ourselves) and,
    when it is the process's own server, settles the heap once it is up."""

    def __init__(self, config: uvicorn.Config, *, settle: bool) -> None:
        super().__init__(config)
        self._settle = settle

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._settle:
            settle_heap()


def settle_heap() -> None:
    """Take what startup built (modules, models, schemas, WSDL, settings) out of the cyclic
    collector's way, once a long-running process is ready.

    Otherwise every full collection walks all of it again: under a warm load on
    `ywtb serve` each took up to 100 ms, and they made the API's p99. Objects made
    later are collected as before (``gc.freeze``, as CPython advises for servers).
    Only for a process that is the service: what is alive now and later becomes cyclic
    garbage is never collected (a test process would keep sockets open, ports taken).
    """
    gc.collect()
    gc.freeze()


def api_server(
    app: FastAPI,
    host: str,
    port: int,
    limits: LimitsSettings | None = None,
    *,
    settle_heap: bool = False,
) -> QuietSignalsServer:
    """The API's uvicorn server; ``settle_heap`` when it is the process's service (the CLI,
    the sandbox), so that the heap is settled once it is up."""
    limits = limits or LimitsSettings()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        # httptools parses; slow clients are cut: headers (gateway.api.slowclients), idle
        # keep-alive. The event loop is the process's: uvloop for `ywtb serve` (gateway.cli).
        http=header_timeout_protocol(limits.header_read_timeout_s),
        timeout_keep_alive=limits.keep_alive_s,
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S,
    )
    return QuietSignalsServer(config, settle=settle_heap)


def stop_on_signals(stop: asyncio.Event) -> None:
    """Set ``stop`` on SIGINT or SIGTERM (a second signal is ignored: shutdown is under way)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
