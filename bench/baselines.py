"""The floors the connector is measured against, served the same way (uvicorn, own process).

- ``raw``: FastAPI with the same pydantic request body, answering 201 JSON. No I/O.
- ``floor``: the persistence floor: FastAPI + asyncpg, one transaction inserting an
  application row and an outbox row (what any transactional-outbox write costs).

Run as ``python -m bench.baselines raw|floor PORT`` (the floor reads
``BENCH_POSTGRES_DSN`` and ``BENCH_POSTGRES_SCHEMA``).
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel


class Applicant(BaseModel):
    credential_type: str
    credential_no: str


class Site(BaseModel):
    address: str
    district_code: str


class ConnectionRequest(BaseModel):
    business_type: str
    voltage_level: str
    capacity_kva: float


class Body(BaseModel):
    applicant: Applicant
    site: Site
    request: ConnectionRequest
    project_code: str | None = None


def raw_app() -> FastAPI:
    app = FastAPI()

    @app.post("/api/v1/applications", status_code=201)
    async def submit(body: Body) -> dict[str, object]:
        return {"id": str(uuid.uuid4()), "status": "ready", **body.model_dump()}

    return app


FLOOR_TABLES = """
CREATE TABLE IF NOT EXISTS floor_applications (
    id text PRIMARY KEY, status text NOT NULL, request jsonb NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS floor_outbox (
    seq bigserial PRIMARY KEY, event_id text UNIQUE NOT NULL, key text NOT NULL,
    data jsonb NOT NULL, created_at timestamptz NOT NULL, sent_at timestamptz
);
"""


def floor_app(dsn: str, schema: str) -> FastAPI:
    import asyncpg

    pool: asyncpg.Pool | None = None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        nonlocal pool
        pool = await asyncpg.create_pool(
            dsn, min_size=10, max_size=10, server_settings={"search_path": schema}
        )
        async with pool.acquire() as conn:
            await conn.execute(FLOOR_TABLES)
        yield
        await pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/api/v1/applications", status_code=201)
    async def submit(body: Body) -> dict[str, object]:
        assert pool is not None
        application_id, now = str(uuid.uuid4()), datetime.now(UTC)
        data = body.model_dump_json()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO floor_applications (id, status, request, created_at)"
                " VALUES ($1, 'ready', $2::jsonb, $3)",
                application_id,
                data,
                now,
            )
            await conn.execute(
                "INSERT INTO floor_outbox (event_id, key, data, created_at)"
                " VALUES ($1, $2, $3::jsonb, $4)",
                str(uuid.uuid4()),
                application_id,
                json.dumps({"application_id": application_id}),
                now,
            )
        return {"id": application_id, "status": "ready", **body.model_dump()}

    return app


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    app = (
        raw_app()
        if kind == "raw"
        else floor_app(os.environ["BENCH_POSTGRES_DSN"], os.environ["BENCH_POSTGRES_SCHEMA"])
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
