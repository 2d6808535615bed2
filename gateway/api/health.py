"""Liveness, readiness and the outbox backlog for ops."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from gateway.api.deps import ClientDep, ContainerDep, SessionDep
from gateway.outbox import backlog
from gateway.store.db import store_errors
from schemas.errors import ConnectorError, StoreUnavailable

router = APIRouter()


@router.get("/healthz", tags=["ops"], summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", tags=["ops"], summary="Store, broker, outbox backlog and each platform")
async def readyz(container: ContainerDep) -> JSONResponse:
    checks: dict[str, Any] = {}
    ready = True
    try:
        with store_errors():
            async with container.sessions() as session:
                await session.execute(text("SELECT 1"))
                count, oldest_age = await backlog(session)
        checks["store"] = {"ok": True}
        checks["outbox"] = {"ok": True, "pending": count, "oldest_age_s": oldest_age}
    except (StoreUnavailable, OSError) as exc:
        ready = False
        checks["store"] = {"ok": False, "error": str(exc)}
    try:
        await container.bus.ping()
        checks["broker"] = {"ok": True}
    except ConnectorError as exc:
        ready = False
        checks["broker"] = {"ok": False, "error": exc.detail}
    # An open circuit is reported, not fatal: the connector keeps accepting work
    # (evidence stays pending, deliveries wait) while a government platform is down.
    checks["platforms"] = {name: breaker.snapshot() for name, breaker in container.breakers.items()}
    checks["exchange_log"] = container.exchanges.readiness()
    body = {"status": "ready" if ready else "not_ready", "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/api/v1/ops/outbox", tags=["ops"], summary="Events not yet published")
async def outbox_backlog(_client: ClientDep, session: SessionDep) -> dict[str, Any]:
    count, oldest_age = await backlog(session)
    return {"pending": count, "oldest_age_s": oldest_age}
