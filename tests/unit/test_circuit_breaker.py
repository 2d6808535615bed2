"""The per-platform circuit breaker, on an injected clock: no sockets, no sleeping."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from adapters.resilience import BreakerState, CircuitBreaker
from schemas.errors import NotFound, PlatformRejected, PlatformUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Platform:
    """Stands in for a platform call: counts the calls that got through the guard."""

    def __init__(self) -> None:
        self.calls = 0

    def fail(self, breaker: CircuitBreaker) -> None:
        with pytest.raises(PlatformUnavailable), breaker.guard():
            self.calls += 1
            raise PlatformUnavailable("project", "answered HTTP 503")

    def succeed(self, breaker: CircuitBreaker) -> None:
        with breaker.guard():
            self.calls += 1


@pytest.fixture
def clock() -> Clock:
    return Clock()


#: The wall clock at the monotonic clock's zero (2025-11-26T00:00:00Z).
WALL_AT_ZERO = 1_764_115_200.0


def wall(monotonic: float) -> str:
    """The ISO wall-clock time of a moment on the test's monotonic clock."""
    return datetime.fromtimestamp(WALL_AT_ZERO + monotonic, UTC).isoformat()


@pytest.fixture
def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker(
        "project",
        failure_threshold=3,
        reset_timeout_s=30.0,
        clock=clock,
        wall_clock=lambda: WALL_AT_ZERO + clock.now,
    )


CLOSED = {
    "state": "closed",
    "consecutive_failures": 0,
    "opened_at": None,
    "half_open_at": None,
    "last_failure": None,
}


def test_a_new_breaker_is_closed(breaker: CircuitBreaker) -> None:
    assert breaker.platform == "project"
    assert breaker.state is BreakerState.CLOSED
    assert breaker.snapshot() == CLOSED


def test_threshold_consecutive_failures_open_it(breaker: CircuitBreaker, clock: Clock) -> None:
    platform = Platform()
    platform.fail(breaker)
    platform.fail(breaker)
    assert breaker.state is BreakerState.CLOSED

    platform.fail(breaker)

    assert breaker.state is BreakerState.OPEN
    assert breaker.snapshot() == {
        "state": "open",
        "consecutive_failures": 3,
        "opened_at": wall(1000.0),
        "half_open_at": wall(1030.0),
        "last_failure": "answered HTTP 503",
    }
    assert wall(1000.0) == "2025-11-26T00:16:40+00:00"


def test_a_success_resets_the_count(breaker: CircuitBreaker) -> None:
    platform = Platform()
    platform.fail(breaker)
    platform.fail(breaker)
    platform.succeed(breaker)
    platform.fail(breaker)
    platform.fail(breaker)

    assert breaker.state is BreakerState.CLOSED
    assert breaker.snapshot()["consecutive_failures"] == 2


def test_open_fails_fast_without_calling(breaker: CircuitBreaker, clock: Clock) -> None:
    platform = Platform()
    for _ in range(3):
        platform.fail(breaker)
    clock.now += 10

    with pytest.raises(PlatformUnavailable) as caught, breaker.guard():
        platform.calls += 1

    assert platform.calls == 3
    assert caught.value.platform == "project"
    assert caught.value.detail == "project: circuit open after: answered HTTP 503"
    assert caught.value.context["retry_in_s"] == 20.0
    assert breaker.state is BreakerState.OPEN


def test_half_open_after_the_timeout_lets_exactly_one_trial_through(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    platform = Platform()
    for _ in range(3):
        platform.fail(breaker)
    clock.now += 30
    assert breaker.state is BreakerState.HALF_OPEN

    with breaker.guard():  # the trial, still in flight
        platform.calls += 1
        with pytest.raises(PlatformUnavailable, match="circuit open"), breaker.guard():
            platform.calls += 1

    assert platform.calls == 4
    assert breaker.state is BreakerState.CLOSED


def test_a_successful_trial_closes_it(breaker: CircuitBreaker, clock: Clock) -> None:
    platform = Platform()
    for _ in range(3):
        platform.fail(breaker)
    clock.now += 31

    platform.succeed(breaker)

    assert breaker.snapshot() == CLOSED | {"last_failure": "answered HTTP 503"}
    platform.succeed(breaker)
    assert platform.calls == 5


def test_a_failed_trial_opens_it_again(breaker: CircuitBreaker, clock: Clock) -> None:
    platform = Platform()
    for _ in range(3):
        platform.fail(breaker)
    clock.now += 31

    platform.fail(breaker)

    assert breaker.state is BreakerState.OPEN
    assert breaker.snapshot()["opened_at"] == wall(1031.0)
    with pytest.raises(PlatformUnavailable), breaker.guard():
        platform.calls += 1
    assert platform.calls == 4
    clock.now += 30
    assert breaker.state is BreakerState.HALF_OPEN


@pytest.mark.parametrize(
    "answer",
    [NotFound("project: 项目不存在"), PlatformRejected("project", "请求参数错误")],
)
def test_permanent_errors_do_not_count(breaker: CircuitBreaker, answer: Exception) -> None:
    platform = Platform()
    for _ in range(2):
        platform.fail(breaker)

    for _ in range(3):
        with pytest.raises(type(answer)), breaker.guard():
            raise answer

    assert breaker.state is BreakerState.CLOSED
    assert breaker.snapshot()["consecutive_failures"] == 0


def test_a_permanent_answer_to_the_trial_closes_it(breaker: CircuitBreaker, clock: Clock) -> None:
    platform = Platform()
    for _ in range(3):
        platform.fail(breaker)
    clock.now += 30

    with pytest.raises(NotFound), breaker.guard():
        raise NotFound("project: 项目不存在")

    assert breaker.state is BreakerState.CLOSED


def test_a_trial_cut_short_frees_the_slot_without_deciding(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    platform = Platform()
    for _ in range(3):
        platform.fail(breaker)
    clock.now += 30

    with pytest.raises(asyncio.CancelledError), breaker.guard():
        raise asyncio.CancelledError

    assert breaker.state is BreakerState.HALF_OPEN
    platform.succeed(breaker)
    assert breaker.state is BreakerState.CLOSED


def test_the_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker("project", failure_threshold=0)
