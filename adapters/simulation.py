"""What every platform simulator shares: fault injection, call records, serving.

A simulator is a real HTTP server on loopback. Each one is a FastAPI app built
by its adapter's ``simulator.py``; this module adds the admin endpoints that
tests and drills use:

- ``GET|PUT /_admin/faults``: ``{"latency_s": 0.0, "error_rate": 0.0, "down": false}``
- ``GET|DELETE /_admin/calls``: operations counted since the last reset, and the
  requests received (method, path, headers, body) for contract tests.

Simulators of platforms that call us back (permit decisions, filed cases) post
with ``deliver_signed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
import uvicorn
from fastapi import Body, FastAPI, Request, Response
from pydantic import BaseModel, Field

from adapters.signing import Signer

ADMIN_PREFIX = "/_admin"


class Faults(BaseModel):
    latency_s: float = Field(0.0, ge=0, description="added before every answer")
    error_rate: float = Field(0.0, ge=0, le=1, description="share of calls answered with an error")
    down: bool = Field(False, description="answer every call with 503")


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class SimulatorControl:
    """Fault settings and what the simulator saw; one per simulator app."""

    faults: Faults = field(default_factory=Faults)
    calls: Counter[str] = field(default_factory=Counter)
    received: deque[ReceivedRequest] = field(default_factory=lambda: deque(maxlen=500))
    answer_s: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    """How long each answer took, from its request read to its response made (the injected
    latency included): what the platform's latency is, as the simulator ran it."""

    def record(self, operation: str) -> None:
        self.calls[operation] += 1

    def reset(self) -> None:
        self.calls.clear()
        self.received.clear()
        self.answer_s.clear()


ErrorResponse = Callable[[int, str], Response]


def install_control(app: FastAPI, control: SimulatorControl, error_response: ErrorResponse) -> None:
    """Add fault injection and the admin endpoints to a simulator app.

    ``error_response(status, message)`` renders an injected failure in the
    platform's own format (a SOAP Fault, a JSON error body, ...).
    """

    @app.middleware("http")
    async def _inject(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.url.path.startswith(ADMIN_PREFIX):
            return await call_next(request)
        started = time.perf_counter()
        try:
            return await _answer(request, call_next)
        finally:
            control.answer_s.append(time.perf_counter() - started)

    async def _answer(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        body = await request.body()
        control.received.append(
            ReceivedRequest(request.method, request.url.path, dict(request.headers), body)
        )
        faults = control.faults
        if faults.latency_s:
            await asyncio.sleep(faults.latency_s)
        if faults.down:
            return error_response(503, "platform down (injected)")
        if faults.error_rate and random.random() < faults.error_rate:
            return error_response(500, "platform error (injected)")
        return await call_next(request)

    @app.get(f"{ADMIN_PREFIX}/faults", include_in_schema=False)
    async def get_faults() -> Faults:
        return control.faults

    @app.put(f"{ADMIN_PREFIX}/faults", include_in_schema=False)
    async def put_faults(faults: Faults) -> Faults:
        control.faults = faults
        return faults

    @app.get(f"{ADMIN_PREFIX}/calls", include_in_schema=False)
    async def get_calls() -> dict[str, Any]:
        return {
            "calls": dict(control.calls),
            "answer_ms": [round(s * 1000, 3) for s in control.answer_s],
            "received": [
                {
                    "method": r.method,
                    "path": r.path,
                    "headers": r.headers,
                    "body": r.body.decode("utf-8", "replace"),
                }
                for r in control.received
            ],
        }

    @app.delete(f"{ADMIN_PREFIX}/calls", include_in_schema=False, status_code=204)
    async def reset_calls() -> Response:
        control.reset()
        return Response(status_code=204)


def install_admin_set(app: FastAPI, name: str, values: set[str]) -> None:
    """``GET|PUT|DELETE /_admin/<name>`` over ``values``: read it sorted, replace it with
    a JSON list, empty it (a simulator's configurable refusals)."""
    path = f"{ADMIN_PREFIX}/{name}"

    @app.get(path, include_in_schema=False)
    async def get_values() -> list[str]:
        return sorted(values)

    @app.put(path, include_in_schema=False)
    async def put_values(new: Annotated[list[str], Body()]) -> list[str]:
        values.clear()
        values.update(new)
        return sorted(values)

    @app.delete(path, include_in_schema=False, status_code=204)
    async def clear_values() -> Response:
        values.clear()
        return Response(status_code=204)


@dataclass(frozen=True)
class DeliveryAttempt:
    """One try of a callback: its number (from 1) and the HTTP status, or the error instead.

    ``answer`` is the receiver's JSON object answer of a 2xx (e.g. its acknowledgement).
    """

    attempt: int
    status: int | None = None
    error: str | None = None
    answer: dict[str, Any] | None = None


async def deliver_signed(
    http: httpx.AsyncClient,
    url: str,
    content: bytes,
    *,
    signer: Signer,
    attempts: int,
    backoff_s: float,
    max_backoff_s: float,
    on_attempt: Callable[[DeliveryAttempt], None] = lambda _: None,
) -> bool:
    """POST ``content`` (JSON) to ``url``, signed afresh each time, until a 2xx answers it.

    Up to ``attempts`` tries, waiting ``backoff_s`` after the first failure and
    doubling up to ``max_backoff_s``; ``on_attempt`` sees each try as it ends.
    True if one was answered 2xx.
    """
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            await asyncio.sleep(min(backoff_s * 2 ** (attempt - 2), max_backoff_s))
        request = http.build_request(
            "POST",
            url,
            content=content,
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        request.headers.update(
            signer.headers("POST", request.url.raw_path.decode("ascii"), content)
        )
        try:
            response = await http.send(request)
        except httpx.HTTPError as exc:
            on_attempt(DeliveryAttempt(attempt, error=f"{type(exc).__name__}: {exc}"))
            continue
        answer = None
        if response.is_success:
            with contextlib.suppress(ValueError):
                parsed = response.json()
                answer = parsed if isinstance(parsed, dict) else None
        on_attempt(DeliveryAttempt(attempt, status=response.status_code, answer=answer))
        if response.is_success:
            return True
    return False


def bind_loopback(port: int = 0) -> socket.socket:
    """A listening TCP socket on 127.0.0.1 (port 0 = any free port).

    Made with ``IPPROTO_TCP`` so that asyncio sets ``TCP_NODELAY`` on every
    connection it accepts (it does so only when the protocol is named): else an
    answer whose body is written after its headers waits for the peer's delayed
    ACK, 40 ms on Linux, as a platform's front end never would.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    return sock


class ServedApp:
    """An ASGI app served by uvicorn on loopback, in a thread with its own event loop.

    Used for simulators in tests (a slow simulator never blocks the test's loop)
    and by the sandbox. ``with ServedApp(app) as served: served.url``.
    """

    def __init__(self, app: Any, port: int = 0) -> None:
        self._sock = bind_loopback(port)
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=[self._sock])),
            name=f"served-app-{self.port}",
            daemon=True,
        )

    def start(self) -> ServedApp:
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"server on {self.url} failed to start")
            threading.Event().wait(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> ServedApp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
