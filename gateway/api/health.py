"""Liveness, readiness and the outbox backlog for ops.

``/readyz`` answers 503 when the store or the broker does not answer within
``api.readiness_timeout_s``, or a background loop of this process is stuck
(``Loops.stuck``); ``degraded`` (still 200) while a platform's circuit is
open: the connector keeps accepting work (evidence stays pending, deliveries
wait) while a government platform is down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from gateway.api.deps import ContainerDep, OpsClient, ReadyDetailDep
from gateway.bootstrap import Container
from gateway.outbox import backlog
from schemas.errors import ConnectorError

router = APIRouter()


@router.get("/healthz", tags=["ops"], summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _store(container: Container) -> dict[str, Any]:
    async with container.sessions() as session:
        await session.execute(text("SELECT 1"))
        count, oldest_age = await backlog(session)
    return {"pending": count, "oldest_age_s": oldest_age}


async def _check(
    timeout_s: float, name: str, check: Awaitable[dict[str, Any] | None]
) -> tuple[bool, dict[str, Any]]:
    """Run one check within ``timeout_s``: (True, what it answered) or (False, why not)."""
    try:
        async with asyncio.timeout(timeout_s):
            answer = await check
    except TimeoutError:
        return False, {"error": f"{name}: no answer within {timeout_s:g} s"}
    except ConnectorError as exc:
        return False, {"error": exc.detail}
    return True, answer or {}


@router.get(
    "/readyz",
    tags=["ops"],
    summary="Store, broker, background loops, outbox backlog and each platform",
)
async def readyz(container: ContainerDep, detail: ReadyDetailDep) -> JSONResponse:
    timeout_s = container.settings.api.readiness_timeout_s
    (store_ok, store), (broker_ok, broker) = await asyncio.gather(
        _check(timeout_s, "store", _store(container)),
        _check(timeout_s, "broker", container.bus.ping()),
    )
    checks: dict[str, Any] = {
        "store": {"ok": store_ok} if store_ok else {"ok": False, **store},
        "broker": {"ok": broker_ok, **broker},
    }
    if store_ok:
        checks["outbox"] = {"ok": True, **store}
    stuck = container.loops.stuck()
    checks["loops"] = {"ok": not stuck, "stuck": stuck, "loops": container.loops.snapshot()}
    platforms = {name: breaker.snapshot() for name, breaker in container.breakers.items()}
    checks["platforms"] = platforms
    checks["exchange_log"] = container.exchanges.readiness()
    ready = store_ok and broker_ok and not stuck
    open_circuits = sorted(n for n, s in platforms.items() if s["state"] != "closed")
    status = "not_ready" if not ready else "degraded" if open_circuits else "ready"
    body: dict[str, Any] = {"status": status}
    if detail:  # public by a setting (the sandbox), else for a client with ops:read
        body["checks"] = checks
    if not ready:
        down = [name for name, ok in (("store", store_ok), ("broker", broker_ok)) if not ok]
        body["failing"] = down + [f"loop {name}" for name in stuck]
    if open_circuits:
        body["open_circuits"] = open_circuits
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/api/v1/ops/outbox", tags=["ops"], summary="Events not yet published")
async def outbox_backlog(_client: OpsClient, container: ContainerDep) -> dict[str, Any]:
    async with container.sessions() as session:
        count, oldest_age = await backlog(session)
    return {"pending": count, "oldest_age_s": oldest_age}
