"""Supervised background loops: the relay, every worker and every periodic job.

A loop body is ``async def body(stop, beat)``: it runs until ``stop`` is set
and calls ``beat()`` whenever it makes progress (each round, busy or idle).
``supervise`` runs the body and, when it raises, logs the error, backs off and
runs it again, so no single failure ends a process. ``Loops`` is the
process's registry of its loops: ``/readyz`` answers 503 naming a loop that is
not running or has not beaten for ``stall_after_s``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

Beat = Callable[[], None]
LoopBody = Callable[[asyncio.Event, Beat], Awaitable[None]]


@dataclass
class LoopState:
    """What a loop has done lately (wall-clock times, seconds since the epoch)."""

    name: str
    running: bool = False
    started_at: float | None = None
    last_beat: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    restarts: int = 0

    def beat(self) -> None:
        self.last_beat = time.time()

    def stalled(self, stall_after_s: float, now: float | None = None) -> bool:
        """Not running, or no beat for ``stall_after_s``."""
        now = time.time() if now is None else now
        last = self.last_beat or self.started_at
        return not self.running or last is None or now - last > stall_after_s

    def snapshot(self, stall_after_s: float) -> dict[str, Any]:
        return {
            "running": self.running,
            "ok": not self.stalled(stall_after_s),
            "last_beat": _iso(self.last_beat),
            "restarts": self.restarts,
            "last_error": self.last_error,
            "last_error_at": _iso(self.last_error_at),
        }


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


class Loops:
    """The background loops of one process, as ``/readyz`` reports them."""

    def __init__(self, stall_after_s: float = 60.0) -> None:
        self.stall_after_s = stall_after_s
        self._states: dict[str, LoopState] = {}

    def state(self, name: str) -> LoopState:
        return self._states.setdefault(name, LoopState(name))

    def stuck(self) -> list[str]:
        """Names of the loops that are not running or have made no progress lately."""
        return [name for name, s in self._states.items() if s.stalled(self.stall_after_s)]

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {name: s.snapshot(self.stall_after_s) for name, s in self._states.items()}

    def states(self) -> list[LoopState]:
        """Every loop's state (``/metrics`` exports their progress)."""
        return list(self._states.values())


async def supervise(
    name: str,
    body: LoopBody,
    stop: asyncio.Event,
    loops: Loops,
    *,
    backoff_initial_s: float = 0.5,
    backoff_max_s: float = 30.0,
) -> None:
    """Run ``body`` until ``stop`` is set; whatever it raises, log it, back off, run it again."""
    state = loops.state(name)
    backoff = backoff_initial_s
    while not stop.is_set():
        state.running, state.started_at = True, time.time()
        try:
            await body(stop, state.beat)
            backoff = backoff_initial_s
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise
            _failed(name, state, exc, backoff)  # a library's own cancellation leaked out
        except Exception as exc:  # noqa: BLE001 - a supervisor outlives any failure of its loop
            _failed(name, state, exc, backoff)
        finally:
            state.running = False
        if stop.is_set():
            break
        await wait_or_stop(stop, backoff * (1 + random.random() / 2))
        backoff = min(backoff * 2, backoff_max_s)


def _failed(name: str, state: LoopState, exc: BaseException, backoff: float) -> None:
    state.last_error = f"{type(exc).__name__}: {exc}"[:1000]
    state.last_error_at = time.time()
    state.restarts += 1
    log.error(
        "loop failed, restarting",
        exc_info=exc,
        extra={"loop": name, "backoff_s": backoff},
    )


async def periodic(
    stop: asyncio.Event, beat: Beat, interval_s: float, job: Callable[[], Awaitable[Any]]
) -> None:
    """A loop body for a periodic job: run ``job`` every ``interval_s`` until ``stop``."""
    while not stop.is_set():
        await job()
        beat()
        await wait_or_stop(stop, interval_s)


async def wait_or_stop(stop: asyncio.Event, seconds: float, *wake: asyncio.Event) -> None:
    """Sleep ``seconds``, cut short when ``stop`` (or any of ``wake``) is set."""
    waits = [asyncio.ensure_future(event.wait()) for event in (stop, *wake)]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
