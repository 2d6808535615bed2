"""The process's own API server settles its heap once it is up; any other server never does
(a frozen heap keeps what later becomes garbage: sockets, ports)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI

from gateway.runtime import api_server


@pytest.mark.parametrize("settle", [True, False])
async def test_the_heap_is_frozen_once_the_service_is_up_and_not_before(settle: bool) -> None:
    gc.unfreeze()
    frozen_at_startup: list[int] = []

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:  # runs before the server is up
        frozen_at_startup.append(gc.get_freeze_count())
        yield

    server = api_server(FastAPI(lifespan=lifespan), "127.0.0.1", 0, settle_heap=settle)
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)
        assert frozen_at_startup == [0]
        if settle:
            assert gc.get_freeze_count() > 1000  # what startup built: modules, classes, the app
        else:
            assert gc.get_freeze_count() == 0
    finally:
        server.should_exit = True
        await serving
        gc.unfreeze()
