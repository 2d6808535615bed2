"""Each worker's throughput (inbox + effect), one ``ywtb worker NAME`` process at a time.

The store and the topics are filled through the real paths first (the API, the
一网通办 simulator filing cases, stage reports, permit requests; ``ywtb relay``
publishes them), then each worker starts alone on its backlog. Its rate is the
backlog over the time from its first commit to lag 0 (the consumer group join,
about 5 s on the development broker, is left out).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from bench.stack import Stack, gather_limited, post_json, say
from gateway.lag import group_lag
from gateway.workers import WORKER_TOPICS

CASES = 200
APPLICATIONS = 300
PERMITS = 100
TEN_KV: dict[str, Any] = {
    "applicant": {"credential_type": "uscc", "credential_no": "91310112MA1KD7015F"},
    "site": {"address": "上海市闵行区剑川路930号", "district_code": "310112"},
    "request": {"business_type": "new_connection", "voltage_level": "10kV", "capacity_kva": 800},
}
WORKS = {
    "works_name": "剑川路10kV电缆接入工程",
    "contractor_name": "上海电力建设有限公司",
    "road": "剑川路",
    "section_start": "沧源路",
    "section_end": "东川路",
    "excavation_length_m": 120,
    "excavation_area_m2": 180,
    "period_start": "2026-12-10",
    "period_end": "2026-12-20",
}

Submit = Callable[..., Awaitable[list[str]]]


async def _fill(stack: Stack, url: str, schema: str, submit: Submit) -> None:
    await submit(url, APPLICATIONS)
    ywtb = stack.simulators["ywtb"].url
    s = stack.settings.ywtb
    async with httpx.AsyncClient(timeout=30) as http:

        async def file(n: int) -> None:
            await http.post(
                f"{ywtb}/_admin/file-case",
                json={
                    "case_no": f"SHBENCHW{int(time.time())}{n:05d}",
                    "item_code": "310100-GDYD-001",
                    "credential_type": "uscc",
                    "credential_no": "91310106MA1FP5221E",
                    "applicant_name": "上海静安悦享餐饮管理有限公司",
                    "district_code": "310106",
                    "site_address": "上海市静安区南京西路1266号",
                    "business_type": "new_connection",
                    "voltage_level": "0.4kV",
                    "capacity_kva": 100,
                    "filed_at": "2026-11-26T10:00:00+08:00",
                    "callback_url": f"{url}/callbacks/ywtb/cases",
                    "callback_app_id": s.callback_app_id,
                    "callback_secret": s.callback_key.get_secret_value(),
                },
            )

        await gather_limited(8, [file(n) for n in range(CASES)])
        case_apps = await _case_applications(stack, schema)
        await gather_limited(
            8,
            [
                post_json(
                    http,
                    f"{url}/api/v1/applications/{a}/progress",
                    {"stage": "accepted", "handler": "bench"},
                )
                for a in case_apps
            ],
        )
        ten_kv = await submit(url, PERMITS, TEN_KV)
        await gather_limited(
            8, [post_json(http, f"{url}/api/v1/applications/{a}/permits", WORKS) for a in ten_kv]
        )


async def _case_applications(stack: Stack, schema: str) -> list[str]:
    import asyncpg

    conn = await asyncpg.connect(stack.dsn, server_settings={"search_path": schema})
    try:
        return [r["application_id"] for r in await conn.fetch("SELECT application_id FROM cases")]
    finally:
        await conn.close()


async def _drain_outbox(stack: Stack, env: dict[str, str]) -> None:
    import asyncpg

    relay = stack.start(["gateway.cli", "relay"], env, "relay")
    conn = await asyncpg.connect(
        stack.dsn, server_settings={"search_path": env["YWTB_STORE_SCHEMA_NAME"]}
    )
    try:
        while await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL"):
            await asyncio.sleep(0.5)
    finally:
        await conn.close()
    relay.terminate()
    relay.wait(timeout=15)


async def _lag(stack: Stack, name: str) -> int:
    rows = await group_lag(stack.settings.kafka, f"ywtb.worker.{name}", WORKER_TOPICS[name])
    return sum(r["lag"] or 0 for r in rows)


async def worker_throughput(stack: Stack, submit: Submit) -> dict[str, Any]:
    schema = await stack.new_schema()
    url = stack.serve(schema)
    env = stack.env(
        YWTB_STORE_URL=stack.postgres_url, YWTB_STORE_SCHEMA_NAME=schema, YWTB_LOG_LEVEL="WARNING"
    )
    say("  filling the topics through the API and the simulators")
    await _fill(stack, url, schema, submit)
    await _drain_outbox(stack, env)
    stack.stop_processes()
    results: dict[str, Any] = {}
    for name in WORKER_TOPICS:
        backlog = await _lag(stack, name)
        process = stack.start(["gateway.cli", "worker", name], env, f"worker-{name}")
        first = last = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            lag = await _lag(stack, name)
            now = time.monotonic()
            if first is None and lag < backlog:
                first = now
            if lag == 0:
                last = now
                break
            await asyncio.sleep(0.2)
        process.terminate()
        process.wait(timeout=15)
        took = (last - first) if first is not None and last is not None else None
        rate = round(backlog / took, 1) if took else None
        say(f"  {name:<12} backlog {backlog:>5}  {rate} msg/s")
        results[name] = {"backlog": backlog, "seconds": took, "messages_per_s": rate}
    return {"scenario": "each worker alone on its backlog (inbox + effect)", "workers": results}
