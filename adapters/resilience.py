"""Timeouts, retries, circuit breaking and error translation shared by every outbound client.

Each client wraps one platform call as::

    async for attempt in retry_transient(self._attempts):
        with attempt, self.breaker.guard(), httpx_errors(PLATFORM):
            response = await self._http.post(...)

Only ``TransientError`` is retried (exponential back-off with jitter); a
``PermanentError`` is raised at once. The breaker (one per platform) counts
transient failures of single attempts; once open it fails every attempt fast,
without a call, until ``reset_timeout_s`` has passed and one trial call is let
through.

Every attempt is counted in ``ywtb_platform_calls`` (platform, operation,
outcome) and timed in ``ywtb_platform_call_duration_seconds``; an attempt the
open breaker refused is counted with outcome ``circuit_open`` and not timed.
through. A fast failure names the last real one (``licence: circuit open
after: timed out (ReadTimeout)``), so what records it keeps the cause.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum

import httpx
from prometheus_client import Counter, Histogram
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from adapters.bounded import AnswerTooLarge
from schemas.errors import PermanentError, PlatformRejected, PlatformUnavailable, TransientError

PLATFORM_CALLS = Counter(
    "ywtb_platform_calls",
    "Calls to government and utility platforms, one per attempt, by outcome "
    "(ok, transient_error, permanent_error, circuit_open, error)",
    ["platform", "operation", "outcome"],
)
PLATFORM_CALL_DURATION = Histogram(
    "ywtb_platform_call_duration_seconds",
    "Duration of one attempt of a platform call (refused attempts excluded)",
    ["platform", "operation"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


def retry_transient(attempts: int, *, initial_s: float = 0.1, max_s: float = 2.0) -> AsyncRetrying:
    """Retry ``TransientError`` up to ``attempts`` tries in all, then re-raise the last one."""
    return AsyncRetrying(
        retry=retry_if_exception_type(TransientError),
        stop=stop_after_attempt(max(1, attempts)),
        wait=wait_exponential(multiplier=initial_s, max=max_s) + wait_random(0, initial_s),
        reraise=True,
    )


class BreakerState(StrEnum):
    CLOSED = "closed"  # calls go through; consecutive transient failures are counted
    OPEN = "open"  # calls fail fast until reset_timeout_s has passed
    HALF_OPEN = "half_open"  # one trial call decides: closed again, or open again


class CircuitBreaker:
    """Stops calling a platform that keeps failing transiently; one per platform.

    ``failure_threshold`` consecutive ``TransientError``s open it. While open,
    ``guard`` raises ``PlatformUnavailable`` without calling. After
    ``reset_timeout_s`` it is half-open: exactly one trial call at a time goes
    through (others fail fast); its success closes the breaker, its transient
    failure opens it again. A ``PermanentError`` means the platform answered,
    so it counts as success. Meant for one event loop: the state changes
    happen between awaits.
    """

    def __init__(
        self,
        platform: str,
        *,
        failure_threshold: int = 5,
        reset_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.platform = platform
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._wall_clock = wall_clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False
        self.last_failure: str | None = None

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.reset_timeout_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def snapshot(self) -> dict[str, object]:
        """The state as ``/readyz`` reports it, times as wall-clock ISO 8601 (UTC)."""
        opened_at = half_open_at = None
        if self._opened_at is not None:
            opened = self._wall_clock() - (self._clock() - self._opened_at)
            opened_at = _iso(opened)
            half_open_at = _iso(opened + self.reset_timeout_s)
        return {
            "state": self.state.value,
            "consecutive_failures": self._failures,
            "opened_at": opened_at,
            "half_open_at": half_open_at,
            "last_failure": self.last_failure,
        }

    @contextmanager
    def guard(self, operation: str = "call") -> Iterator[None]:
        """Around one attempt of ``operation``: fail fast if open, let one trial through if
        half-open, and count the attempt's outcome (in the breaker and in the metrics)."""
        state = self.state
        if state is BreakerState.OPEN or (
            state is BreakerState.HALF_OPEN and self._trial_in_flight
        ):
            PLATFORM_CALLS.labels(self.platform, operation, "circuit_open").inc()
            raise self._fail_fast(state)
        trial = state is BreakerState.HALF_OPEN
        self._trial_in_flight = self._trial_in_flight or trial
        outcome = "error"
        started = time.perf_counter()
        try:
            yield
        except TransientError as exc:
            outcome = "transient_error"
            self._record_failure(trial, exc)
            raise
        except PermanentError:
            outcome = "permanent_error"
            self._record_success()
            raise
        else:
            outcome = "ok"
            self._record_success()
        finally:
            if trial:
                self._trial_in_flight = False
            PLATFORM_CALLS.labels(self.platform, operation, outcome).inc()
            PLATFORM_CALL_DURATION.labels(self.platform, operation).observe(
                time.perf_counter() - started
            )

    def _record_failure(self, trial: bool, exc: TransientError) -> None:
        self.last_failure = exc.reason if isinstance(exc, PlatformUnavailable) else exc.detail
        self._failures += 1
        if trial or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()

    def _record_success(self) -> None:
        self._failures = 0
        self._opened_at = None

    def _fail_fast(self, state: BreakerState) -> PlatformUnavailable:
        assert self._opened_at is not None
        retry_in_s = max(0.0, self._opened_at + self.reset_timeout_s - self._clock())
        detail = "circuit open" if state is BreakerState.OPEN else "circuit open (trial in flight)"
        if self.last_failure:
            detail = f"{detail} after: {self.last_failure}"
        return PlatformUnavailable(
            self.platform,
            detail,
            circuit=state.value,
            retry_in_s=round(retry_in_s, 3),
            cause=self.last_failure,
        )


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


@contextmanager
def httpx_errors(platform: str) -> Iterator[None]:
    """Translate httpx transport failures into ``PlatformUnavailable``, and an answer over
    the size bound (``adapters.bounded``) into ``PlatformRejected``."""
    try:
        yield
    except AnswerTooLarge as exc:
        raise PlatformRejected(platform, str(exc), platform_code="answer_too_large") from exc
    except httpx.TimeoutException as exc:
        raise PlatformUnavailable(platform, f"timed out ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise PlatformUnavailable(platform, f"unreachable ({type(exc).__name__}: {exc})") from exc


def raise_for_server_error(platform: str, response: httpx.Response) -> None:
    """A 5xx (or 429) answer is transient, whatever the body says."""
    if response.status_code >= 500 or response.status_code == 429:
        raise PlatformUnavailable(platform, f"answered HTTP {response.status_code}")
