"""Timeouts, retries and error translation shared by every outbound client.

Each client wraps one platform call as::

    async for attempt in retry_transient(self._attempts):
        with attempt, httpx_errors(PLATFORM):
            response = await self._http.post(...)

Only ``TransientError`` is retried (exponential back-off with jitter); a
``PermanentError`` is raised at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from schemas.errors import PlatformUnavailable, TransientError


def retry_transient(attempts: int, *, initial_s: float = 0.1, max_s: float = 2.0) -> AsyncRetrying:
    """Retry ``TransientError`` up to ``attempts`` tries in all, then re-raise the last one."""
    return AsyncRetrying(
        retry=retry_if_exception_type(TransientError),
        stop=stop_after_attempt(max(1, attempts)),
        wait=wait_exponential(multiplier=initial_s, max=max_s) + wait_random(0, initial_s),
        reraise=True,
    )


@contextmanager
def httpx_errors(platform: str) -> Iterator[None]:
    """Translate httpx transport failures into ``PlatformUnavailable``."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise PlatformUnavailable(platform, f"timed out ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise PlatformUnavailable(platform, f"unreachable ({type(exc).__name__}: {exc})") from exc


def raise_for_server_error(platform: str, response: httpx.Response) -> None:
    """A 5xx (or 429) answer is transient, whatever the body says."""
    if response.status_code >= 500 or response.status_code == 429:
        raise PlatformUnavailable(platform, f"answered HTTP {response.status_code}")
