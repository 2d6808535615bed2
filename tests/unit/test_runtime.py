"""A server started through ``gateway.runtime`` settles its heap once it is up."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gateway.runtime import api_server


async def test_the_heap_is_frozen_once_the_server_is_up_and_not_before() -> None:
    gc.unfreeze()
    frozen_at_startup: list[int] = []

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:  # runs before the server is up
        frozen_at_startup.append(gc.get_freeze_count())
        yield

    server = api_server(FastAPI(lifespan=lifespan), "127.0.0.1", 0)
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)
        assert frozen_at_startup == [0]
        assert gc.get_freeze_count() > 1000  # what startup built: modules, classes, the app
    finally:
        server.should_exit = True
        await serving
        gc.unfreeze()
