"""Fixtures every contract suite shares: a fresh simulator control, the caller's HTTP
client, and loopback serving that ends with the test.

Suites that share one simulator per module override ``control`` with a module
scope and reset it before each test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from adapters.simulation import ServedApp, SimulatorControl
from contract_tests.helpers import USER_AGENT


@pytest.fixture
def control() -> SimulatorControl:
    return SimulatorControl()


@pytest.fixture
def serve() -> Iterator[Callable[[Any], ServedApp]]:
    """Serve an app on loopback until the end of the test."""
    with ExitStack() as stack:
        yield lambda app: stack.enter_context(ServedApp(app))


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """The caller's client, with a User-Agent of its own that adapters must leave alone."""
    async with httpx.AsyncClient(headers={"User-Agent": USER_AGENT}) as client:
        yield client
