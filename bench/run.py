"""``make bench``: the connector against its own floors, every scenario in one run.

    .venv/bin/python -m bench.run [--seconds 10] [--large 1000000] [--only NAME ...]

Starts what it needs (development broker, a fresh PostgreSQL schema per
scenario, the simulators, each server as its own uvicorn process, wrk as the
load generator), runs every scenario with its baselines in the same run, writes
``bench/results/<scenario>.json``, ``bench/results/summary.md`` and PNG plots,
and prints the goals table. README ("Benchmarks") says how to read it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from adapters.signing import sign_request
from adapters.ywtb.mapping import callback_body
from bench.relay import relay_vs_producer
from bench.stack import API_KEY, Stack, gather_limited, post_json, say
from bench.wrk import LoadResult, cycle_script, post_script, wrk
from gateway.settings import StoreSettings
from schemas.cases import InboundCase

RESULTS = Path(__file__).with_name("results")
CONCURRENCY = [1, 8, 64, 256]
PACED_CONNECTIONS = 8
SCALE_ROUNDS = 3

SM2_PRIVATE = "28183740b9f43d0740e893096bbb477e721962bf35b85c6ef48a197c6ad03376"
SM2_PUBLIC = (
    "041c38e7bb8aca4fb1ca6e0628bc2b73169417c9fdec7dbf49959e7f0345c476fd"
    "ee423bc09feb7a69f609e54fb0670cb4bcdebd7860d874aed126b9fd678c05e2"
)

#: Warm 一证办电: a small enterprise at low voltage whose licence is on file.
WARM_BODY: dict[str, Any] = {
    "applicant": {"credential_type": "uscc", "credential_no": "91310106MA1FP5221E"},
    "site": {"address": "上海市静安区南京西路1266号", "district_code": "310106"},
    "request": {"business_type": "new_connection", "voltage_level": "0.4kV", "capacity_kva": 100},
}
#: Cold 一证办电: 35 kV with a project, so the licence and the approval are both fetched.
COLD_BODY: dict[str, Any] = {
    "applicant": {"credential_type": "uscc", "credential_no": "91310115MA1HW74707"},
    "site": {"address": "上海市浦东新区临港新片区环湖西二路888号", "district_code": "310115"},
    "request": {"business_type": "new_connection", "voltage_level": "35kV", "capacity_kva": 12000},
    "project_code": "2020-310115-44-02-000077",
}
HEADERS = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}


class Bench:
    def __init__(self, seconds: float, large: int) -> None:
        self.seconds = seconds
        self.large = large
        self.results: dict[str, dict[str, Any]] = {}

    def load(self, url: str, script: str, connections: list[int]) -> list[LoadResult]:
        rows = []
        for n in connections:
            result = wrk(url, script, connections=n, seconds=self.seconds)
            say(
                f"  {n:>3} conns: {result.rps:>8.1f} req/s  p50 {result.p50_ms:.1f} ms  "
                f"p99 {result.p99_ms:.1f} ms  ok {result.ok} shed {result.shed} "
                f"errors {result.errors}"
            )
            rows.append(result)
        return rows

    def keep(self, name: str, what: str, rows: list[LoadResult], **extra: Any) -> None:
        self.results[name] = {"scenario": what, "rows": [r.as_dict() for r in rows], **extra}

    def submit_script(self, body: dict[str, Any], pause_ms: int = 0) -> str:
        return post_script(
            "/api/v1/applications", json.dumps(body, ensure_ascii=False), HEADERS, pause_ms=pause_ms
        )

    async def run(self, only: set[str]) -> None:
        stack = Stack()
        try:
            for name in SCENARIOS:
                if only and name not in only:
                    continue
                say(f"scenario {name}")
                await getattr(self, name)(stack)
                stack.stop_processes()
        finally:
            await stack.close()

    # ------------------------------------------------------------------ scenarios

    async def raw(self, stack: Stack) -> None:
        url = stack.baseline("raw")
        rows = self.load(url + "/api/v1/applications", self.submit_script(WARM_BODY), CONCURRENCY)
        self.keep(
            "raw", "raw FastAPI POST (pydantic body, 201 JSON): the load generator's ceiling", rows
        )

    async def floor(self, stack: Stack) -> None:
        url = stack.baseline("floor", await stack.new_schema())
        rows = self.load(url + "/api/v1/applications", self.submit_script(WARM_BODY), CONCURRENCY)
        self.keep("floor", "persistence floor: FastAPI + asyncpg, application + outbox row", rows)

    async def _warm_server(self, stack: Stack, schema: str | None, **kw: Any) -> str:
        url = stack.serve(schema, **kw)
        async with httpx.AsyncClient(timeout=30) as http:
            first = await post_json(http, url + "/api/v1/applications", WARM_BODY)
            assert first.status_code == 201, first.text
        return url

    async def warm_pg(self, stack: Stack) -> None:
        url = await self._warm_server(stack, await stack.new_schema())
        rows = self.load(url + "/api/v1/applications", self.submit_script(WARM_BODY), CONCURRENCY)
        # Latency at half the highest throughput: 8 connections, each pausing between requests
        # (less the time of an answer at one connection) so that together they offer about half.
        half = max(r.ok_rps for r in rows) / 2
        pause_ms = round(1000 * PACED_CONNECTIONS / max(half, 1) - rows[0].p50_ms)
        script = self.submit_script(WARM_BODY, pause_ms=pause_ms)
        say(f"  paced at about {half:.0f} req/s ({PACED_CONNECTIONS} conns, {pause_ms} ms pauses):")
        [paced] = self.load(url + "/api/v1/applications", script, [PACED_CONNECTIONS])
        self.keep(
            "warm_pg",
            "warm 一证办电, `ywtb serve` on PostgreSQL (licence on file)",
            rows,
            paced=paced.as_dict() | {"offered_per_s": round(half)},
        )

    async def warm_sqlite(self, stack: Stack) -> None:
        url = await self._warm_server(stack, None, sqlite=True)
        rows = self.load(url + "/api/v1/applications", self.submit_script(WARM_BODY), CONCURRENCY)
        self.keep(
            "warm_sqlite", "warm 一证办电, `ywtb serve` on SQLite (the sandbox's store)", rows
        )

    async def cold(self, stack: Stack) -> None:
        latency = 0.02
        await stack.latency("licence", latency)
        await stack.latency("project", latency)
        try:
            url = stack.serve(await stack.new_schema(), YWTB_EVIDENCE_MAX_AGE_S="0")
            rows, answered = [], {}
            for n in (1, 8):
                await stack.answer_times()  # from here on
                rows += self.load(url + "/api/v1/applications", self.submit_script(COLD_BODY), [n])
                answered[str(n)] = await stack.answer_times()
        finally:
            await stack.latency("licence", 0)
            await stack.latency("project", 0)
        say(f"  the platforms answered in (p50 ms): {answered}")
        self.keep(
            "cold",
            "cold 一证办电 (licence and approval fetched, each platform waiting 20 ms to answer)",
            rows,
            platform_latency_ms=latency * 1000,
            platform_answer_p50_ms=answered,
        )

    async def get(self, stack: Stack) -> None:
        url = await self._warm_server(stack, await stack.new_schema())
        ids = await self._submit_many(url, 500)
        requests = [("GET", f"/api/v1/applications/{i}", HEADERS, "") for i in ids]
        rows = self.load(url, cycle_script(requests, threads=2), [1, 8, 64])
        self.keep("get", "GET /api/v1/applications/{id}", rows)

    async def _submit_many(
        self, url: str, count: int, body: dict[str, Any] = WARM_BODY
    ) -> list[str]:
        async with httpx.AsyncClient(timeout=30) as http:
            answers = await gather_limited(
                8, [post_json(http, url + "/api/v1/applications", body) for _ in range(count)]
            )
        return [a.json()["id"] for a in answers if a.status_code == 201]

    async def callback(self, stack: Stack) -> None:
        path = "/callbacks/ywtb/cases"
        env = {
            "YWTB_YWTB_CALLBACK_ALGORITHM": "sm2-sm3",
            "YWTB_YWTB_CALLBACK_KEY": SM2_PUBLIC,
            "YWTB_YWTB_CALLBACK_APP_ID": "ywtb-platform",
        }
        url = await self._warm_server(stack, await stack.new_schema(), **env)
        budget = int(self.seconds * 1200) + 2000
        say(f"  signing {budget} case callbacks with SM2")
        requests = []
        run = uuid.uuid4().hex[:6].upper()
        for n in range(budget):
            case = InboundCase(
                case_no=f"SHBENCH{run}{n:07d}",
                item_code="310100-GDYD-001",
                credential_type="uscc",
                credential_no=WARM_BODY["applicant"]["credential_no"],
                applicant_name="上海静安悦享餐饮管理有限公司",
                district_code="310106",
                site_address="上海市静安区南京西路1266号",
                business_type="new_connection",
                voltage_level="0.4kV",
                capacity_kva=100,
                filed_at=datetime(2026, 11, 26, 10, tzinfo=UTC),
            )
            body = json.dumps(callback_body(case), ensure_ascii=False)
            signed = sign_request(
                "POST",
                path,
                body.encode(),
                app_id="ywtb-platform",
                secret=SM2_PRIVATE,
                algorithm="sm2-sm3",
            )
            requests.append(("POST", path, {**signed, "Content-Type": "application/json"}, body))
        rows = self.load(url, cycle_script(requests, threads=2), [8])
        self.keep("callback", "signed 一网通办 case callbacks, SM2-with-SM3 verified", rows)

    async def relay(self, _stack: Stack) -> None:
        self._relay("relay", await relay_vs_producer(10_000))

    async def relay_pg(self, stack: Stack) -> None:
        async def new_store() -> StoreSettings:
            return StoreSettings(url=stack.postgres_url, schema_name=await stack.new_schema())

        self._relay("relay_pg", await relay_vs_producer(10_000, new_store))

    def _relay(self, name: str, result: dict[str, Any]) -> None:
        say(
            f"  relay {result['relay_events_per_s']} ev/s, "
            f"producer {result['baseline_events_per_s']} ev/s"
        )
        self.results[name] = {
            "scenario": f"outbox relay on {result['store']} vs bare aiokafka producer",
            **result,
        }

    async def two_serves(self, stack: Stack) -> None:
        schema = await stack.new_schema()
        one = await self._warm_server(stack, schema)
        single = wrk(
            one + "/api/v1/applications",
            self.submit_script(WARM_BODY),
            connections=64,
            seconds=self.seconds,
        )
        two = stack.serve(schema)
        script = self.submit_script(WARM_BODY)
        both = await asyncio.gather(
            asyncio.to_thread(
                wrk, one + "/api/v1/applications", script, connections=32, seconds=self.seconds
            ),
            asyncio.to_thread(
                wrk, two + "/api/v1/applications", script, connections=32, seconds=self.seconds
            ),
        )
        say(
            f"  one process {single.rps:.0f} req/s; "
            f"two processes {sum(r.rps for r in both):.0f} req/s"
        )
        self.keep(
            "two_serves",
            "one vs two `ywtb serve` processes (64 connections in all)",
            [single, *both],
        )

    async def scale(self, stack: Stack) -> None:
        """Both stores filled first, each with its own ``ywtb serve``; then their runs
        alternate, and each size keeps its best, so that a busy moment of a shared machine
        (autovacuum, another process) does not decide the comparison."""
        servers: dict[int, tuple[str, list[str]]] = {}
        for size in (10_000, self.large):
            schema = await stack.new_schema()
            url = await self._warm_server(stack, schema)
            ids = await self._submit_many(url, 200)
            say(f"  filling the store to {size:,} applications")
            await fill(stack.dsn, schema, size)
            servers[size] = url, ids
        runs: dict[int, list[tuple[LoadResult, LoadResult]]] = {size: [] for size in servers}
        for _ in range(SCALE_ROUNDS):
            for size, (url, ids) in servers.items():
                warm = wrk(
                    url + "/api/v1/applications",
                    self.submit_script(WARM_BODY),
                    connections=8,
                    seconds=self.seconds,
                )
                gets = [("GET", f"/api/v1/applications/{i}", HEADERS, "") for i in ids]
                get = wrk(url, cycle_script(gets, threads=1), connections=1, seconds=self.seconds)
                say(f"  {size:>9,}: warm {warm.ok_rps:.0f} ok/s, GET p50 {get.p50_ms:.2f} ms")
                runs[size].append((warm, get))
        stack.stop_processes()
        self.results["scale"] = {
            "scenario": "10 thousand vs many stored applications (best of alternating runs)",
            "sizes": {
                str(size): {
                    "warm": max((w for w, _ in pairs), key=lambda r: r.ok_rps).as_dict(),
                    "get": min((g for _, g in pairs), key=lambda r: r.p50_ms).as_dict(),
                    "runs": [{"warm": w.as_dict(), "get": g.as_dict()} for w, g in pairs],
                }
                for size, pairs in runs.items()
            },
        }

    async def workers(self, stack: Stack) -> None:
        from bench.workers import worker_throughput

        self.results["workers"] = await worker_throughput(stack, self._submit_many)


SCENARIOS = [
    "raw",
    "floor",
    "warm_pg",
    "warm_sqlite",
    "cold",
    "get",
    "callback",
    "relay",
    "relay_pg",
    "two_serves",
    "workers",
    "scale",
]


async def fill(dsn: str, schema: str, size: int) -> None:
    """Bulk-insert applications (copies of a real one) until the store holds ``size``."""
    import asyncpg

    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        have = await conn.fetchval("SELECT count(*) FROM applications")
        columns = [
            row["column_name"]
            for row in await conn.fetch(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = $1 AND table_name = 'applications'"
                " ORDER BY ordinal_position",
                schema,
            )
        ]
        # Every column copied from a real row (the schema grows with migrations), but a new
        # id and, one second apart, older times.
        shifted = {"created_at", "received_at"}
        values = ", ".join(
            "md5(random()::text || g::text)"
            if name == "id"
            else f"a.{name} - (g || ' seconds')::interval"
            if name in shifted
            else f"a.{name}"
            for name in columns
        )
        batch = 100_000
        while have < size:
            n = min(batch, size - have)
            await conn.execute(
                f"INSERT INTO applications ({', '.join(columns)}) SELECT {values}"
                " FROM (SELECT * FROM applications LIMIT 1) a, generate_series(1, $1) g",
                n,
            )
            have += n
        # A store in steady state: vacuumed and analysed (else autovacuum works through the
        # new rows during the measurement, on the same cores), its dirty pages written out
        # (else the checkpointer writes the fill's gigabyte during the measurement).
        await conn.execute("VACUUM (ANALYZE)")
        try:
            await conn.execute("CHECKPOINT")
        except asyncpg.InsufficientPrivilegeError:
            say("  (no CHECKPOINT: the role may not; the fill's writes may overlap the runs)")
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="duration of each wrk run")
    parser.add_argument("--large", type=int, default=1_000_000, help="the large store's size")
    parser.add_argument("--only", nargs="*", default=[], choices=SCENARIOS)
    args = parser.parse_args()
    bench = Bench(args.seconds, args.large)
    started = time.monotonic()
    asyncio.run(bench.run(set(args.only)))
    from bench.report import write_report

    meta = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} Python {platform.python_version()}",
        "seconds_per_run": args.seconds,
        "took_s": round(time.monotonic() - started),
    }
    write_report(RESULTS, bench.results, meta)


if __name__ == "__main__":
    main()
