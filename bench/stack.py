"""What the benchmarks run against: a broker, a fresh PostgreSQL schema, the simulators, processes.

Everything on loopback, started by ``Stack`` and stopped with it; the connector
and the baselines each run as their own uvicorn process, the load generator
(wrk) as another.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from adapters.simulation import ServedApp
from gateway.devbroker import DevBroker, free_port
from gateway.sandbox import start_simulators
from gateway.settings import Settings
from schemas.seed import load_seed
from tests.running import settings_env

API_KEY = "bench-key"
POSTGRES_ENV = "YWTB_BENCH_POSTGRES_URL"
DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
ROOT = Path(__file__).resolve().parents[1]


def say(line: str) -> None:
    sys.stdout.write(f"[bench {time.strftime('%H:%M:%S')}] {line}\n")
    sys.stdout.flush()


class Stack:
    """Broker, simulators and PostgreSQL schemas for one benchmark run."""

    def __init__(self) -> None:
        self.postgres_url = os.environ.get(POSTGRES_ENV, DEFAULT_POSTGRES)
        self.workdir = Path(tempfile.mkdtemp(prefix="ywtb-bench-"))
        self.broker = DevBroker(log_file=self.workdir / "broker.log").start()
        self.settings = Settings()
        s = self.settings
        s.environment = "sandbox"
        s.sandbox.api_key = SecretStr(API_KEY)
        s.kafka.bootstrap = self.broker.bootstrap
        s.evidence.budget_s = 3.0
        self.simulators: dict[str, ServedApp] = start_simulators(
            s, load_seed(), "http://127.0.0.1:1"
        )
        self.schemas: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def dsn(self) -> str:
        return self.postgres_url.replace("postgresql+asyncpg://", "postgresql://")

    async def new_schema(self) -> str:
        import asyncpg

        schema = f"bench_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(f'CREATE SCHEMA "{schema}"')
        finally:
            await conn.close()
        self.schemas.append(schema)
        return schema

    def env(self, **overrides: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("YWTB_")}
        return base | settings_env(self.settings) | {"PYTHONPATH": str(ROOT)} | overrides

    def start(self, args: list[str], env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", *args],
            env=env,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.processes.append(process)
        return process

    def serve(self, schema: str | None, *, sqlite: bool = False, **overrides: str) -> str:
        """``ywtb serve`` on a free port against ``schema`` (or a fresh SQLite file); its URL."""
        port = free_port()
        store = (
            {"YWTB_STORE_URL": f"sqlite+aiosqlite:///{self.workdir / f'{port}.db'}"}
            if sqlite
            else {"YWTB_STORE_URL": self.postgres_url, "YWTB_STORE_SCHEMA_NAME": schema or ""}
        )
        env = self.env(**store, YWTB_LOG_LEVEL="WARNING", **overrides)
        self.start(["gateway.cli", "serve", "--port", str(port)], env, f"serve-{port}")
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url)
        return url

    def baseline(self, kind: str, schema: str | None = None) -> str:
        port = free_port()
        env = self.env(BENCH_POSTGRES_DSN=self.dsn, BENCH_POSTGRES_SCHEMA=schema or "public")
        self.start(["bench.baselines", kind, str(port)], env, f"{kind}-{port}")
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, path="/docs")
        return url

    def stop_processes(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()

    async def latency(self, platform: str, seconds: float) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            await http.put(
                f"{self.simulators[platform].url}/_admin/faults", json={"latency_s": seconds}
            )

    async def answer_times(self) -> dict[str, float]:
        """The median time each platform took to answer since the last call, in ms (what the
        simulator measured: the injected latency and its own work); starts counting afresh."""
        medians = {}
        async with httpx.AsyncClient(timeout=10) as http:
            for platform in ("licence", "project"):
                base = f"{self.simulators[platform].url}/_admin/calls"
                answers = (await http.get(base)).json()["answer_ms"]
                await http.delete(base)
                if answers:
                    medians[platform] = round(statistics.median(answers), 2)
        return medians

    async def close(self) -> None:
        self.stop_processes()
        for served in self.simulators.values():
            served.stop()
        self.broker.stop()
        import asyncpg

        conn = await asyncpg.connect(self.dsn)
        try:
            for schema in self.schemas:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


def wait_healthy(url: str, path: str = "/healthz", timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


async def post_json(
    http: httpx.AsyncClient, url: str, body: dict[str, Any], **headers: str
) -> httpx.Response:
    return await http.post(
        url, json=body, headers={"Authorization": f"Bearer {API_KEY}", **headers}
    )


async def gather_limited(n: int, jobs: list[Any]) -> list[Any]:
    """Await coroutines with at most ``n`` at once."""
    gate = asyncio.Semaphore(n)

    async def one(job: Any) -> Any:
        async with gate:
            return await job

    return await asyncio.gather(*(one(j) for j in jobs))
