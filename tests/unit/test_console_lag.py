"""The console's lag per worker: messages summed over partitions, seconds the oldest."""

from __future__ import annotations

from gateway.console.routes import lag_by_worker


def test_messages_add_up_and_the_age_is_the_oldest() -> None:
    rows = [
        {"worker": "marketing", "group": "g", "partition": 0, "end": 9, "lag": 3, "age_s": 4.5},
        {"worker": "marketing", "group": "g", "partition": 1, "end": 7, "lag": 2, "age_s": 12.0},
        {"worker": "marketing", "group": "g.retry", "partition": 0, "end": 0, "lag": 0},
        {"worker": "timeline", "group": "t", "partition": 0, "end": 5, "lag": None},
    ]
    assert lag_by_worker(rows) == [
        {"worker": "marketing", "lag": 5, "age_s": 12.0},
        {"worker": "timeline"},
    ]
