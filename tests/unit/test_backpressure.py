"""The in-flight limit adapts to a late event loop, within bounds, and tells clients to wait."""

from __future__ import annotations

from gateway.api.backpressure import MAX_BACKOFF, InFlightLimit


async def app(scope: object, receive: object, send: object) -> None:
    raise AssertionError("not called")


def test_a_late_loop_shrinks_the_limit_to_half_and_it_grows_back() -> None:
    limit = InFlightLimit(app, max_in_flight=16, retry_after_s=1, loop_lag_target_s=0.2)
    assert limit.limit == 16 and limit.retry_after() == 1

    limit.adjust(0.5)
    assert 11 <= limit.limit < 12
    for _ in range(10):
        limit.adjust(0.5)
    assert limit.limit == 8  # never below half
    assert limit.retry_after() == 3  # fewer places: come back later

    for _ in range(100):
        limit.adjust(0.01)
    assert limit.limit == 16
    assert limit.retry_after() == 1


def test_retry_after_is_bounded() -> None:
    limit = InFlightLimit(app, max_in_flight=1, retry_after_s=2, loop_lag_target_s=0.2)
    for _ in range(10):
        limit.adjust(1.0)
    assert 2 <= limit.retry_after() <= MAX_BACKOFF * 2
