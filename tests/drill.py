"""The fault drill (``make drill``): the production shape, under load, while things break.

Runs as separate processes on one machine: two ``ywtb serve``, two ``ywtb relay``,
each worker as its own ``ywtb worker NAME``, a private PostgreSQL cluster (so the
drill can restart it without touching anyone else's), the development broker and
the simulated platforms. A steady load of applications, 一网通办 cases and progress
reports runs while the drill injects, in this order:

- SIGKILL of random connector processes (each restarted),
- broker SIGKILL and a new (empty) broker on the same port,
- a PostgreSQL restart (immediate shutdown),
- a licence outage longer than the whole retry budget,
- 一网通办 rejecting one case for good, then accepting it (its dead letters are
  replayed with ``ywtb dlq replay``: the deliberate permanent ones),
- more SIGKILLs.

Then it stops the load, waits for the connector to settle, checks the invariants
and prints them as a table; the exit status is 0 only if every row holds::

    python -m tests.drill --duration 600      # make drill
    python -m tests.drill --duration 90       # the shortened drill CI runs
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from pydantic import SecretStr

from gateway.devbroker import DevBroker, free_port
from gateway.lag import worker_lag
from gateway.sandbox import start_simulators
from gateway.settings import Settings
from gateway.workers import WORKER_TOPICS, WORKERS
from schemas.seed import load_seed
from tests.running import settings_env

API_KEY = "drill-key"
CALLBACK_APP_ID = "ywtb-platform"
CALLBACK_KEY = "drill-ywtb-callback-secret"

#: (credential, voltage, capacity, business type, project code, expected status)
SCENARIOS: list[tuple[str, str, float, str, str | None, str]] = [
    ("91310106MA1FP5221E", "0.4kV", 100, "new_connection", None, "ready"),
    ("92310105MA1L2W778L", "0.4kV", 60, "new_connection", None, "ready"),
    ("91310112MA1KD7015F", "10kV", 800, "new_connection", None, "ready"),
    ("91310118MA1K4A7275", "10kV", 630, "capacity_increase", None, "ready"),
    ("91310113MA1GT8791M", "0.4kV", 100, "new_connection", None, "rejected"),
    ("91310117MA1J51014Q", "10kV", 500, "new_connection", None, "rejected"),
]
STAGES = {
    "0.4kV": ["accepted", "metering_and_connection", "completed"],
    ("10kV", "new_connection"): [
        "accepted",
        "survey_and_plan",
        "external_works",
        "metering_and_connection",
        "completed",
    ],
    ("10kV", "capacity_increase"): [
        "accepted",
        "survey_and_plan",
        "metering_and_connection",
        "completed",
    ],
}


def say(line: str) -> None:
    sys.stdout.write(f"[drill {time.strftime('%H:%M:%S')}] {line}\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------- parts


class PrivatePostgres:
    """A PostgreSQL cluster of the drill's own, on a free loopback port, trust auth."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.data = root / "pgdata"
        self.log = root / "postgres.log"
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"
        bins = sorted(glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins and not shutil.which("initdb"):
            raise RuntimeError("the drill needs PostgreSQL's server binaries (initdb, pg_ctl)")
        self.bin = Path(bins[-1]).parent if bins else Path(shutil.which("initdb") or "").parent
        self._as_postgres = os.geteuid() == 0
        root.mkdir(parents=True, exist_ok=True)
        if self._as_postgres:
            root.parent.chmod(0o755)  # the postgres user must reach its folder
            shutil.chown(root, "postgres")

    def _run(self, *argv: str) -> None:
        command = [str(self.bin / argv[0]), *argv[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stderr or done.stdout}")

    def start(self) -> None:
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
            "-c max_connections=200 -c fsync=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")


@dataclass
class Process:
    """One connector process (``ywtb serve|relay|worker``), restartable."""

    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    kills: int = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", *self.args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def kill(self) -> None:
        if self.popen and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)
            self.kills += 1

    def terminate(self, timeout_s: float = 10.0) -> float | None:
        """SIGTERM; seconds it took to exit, or None if it had to be killed."""
        if not self.popen or self.popen.poll() is not None:
            return 0.0
        started = time.monotonic()
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)
            return None
        return time.monotonic() - started


@dataclass
class Answer:
    kind: str
    status: int | None  # None: no answer (connection refused or reset: a process was down)
    retry_after: bool
    seconds: float


@dataclass
class Ledger:
    """What the load saw: every answer, and what the connector acknowledged."""

    answers: list[Answer] = field(default_factory=list)
    applications: dict[str, str] = field(default_factory=dict)  # id -> expected status
    cases: dict[str, str] = field(default_factory=dict)  # case_no -> application id
    reported: dict[str, list[str]] = field(default_factory=dict)  # application id -> stages
    deliberate_dead: set[str] = field(default_factory=set)  # event ids dead-lettered on purpose


# --------------------------------------------------------------------------- the drill


class Drill:
    def __init__(self, duration_s: float, root: Path) -> None:
        self.duration_s = duration_s
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.postgres = PrivatePostgres(root / "postgres")
        self.broker = DevBroker(log_file=root / "broker.log")
        self.ledger = Ledger()
        self.processes: list[Process] = []
        self.api_ports = [free_port(), free_port()]
        self.settings = Settings()
        self.stop_load = asyncio.Event()
        self.reporting: list[asyncio.Future[None]] = []

    # -- start and stop -----------------------------------------------------------

    def start(self) -> None:
        say(f"private PostgreSQL on port {self.postgres.port}")
        self.postgres.start()
        self.broker.start()
        say(f"development broker on {self.broker.bootstrap}")
        s = self.settings
        s.environment = "sandbox"
        s.store.url = self.postgres.url
        s.kafka.bootstrap = self.broker.bootstrap
        s.sandbox.api_key = SecretStr(API_KEY)
        s.ywtb.callback_app_id = CALLBACK_APP_ID
        s.ywtb.callback_key = SecretStr(CALLBACK_KEY)
        s.worker.retry_delays_s = [1.0, 2.0]
        s.worker.in_place_attempts = 3
        s.evidence.budget_s = 1.0
        s.evidence.max_age_s = 5.0  # licences fetched again often, so the outage bites
        s.sandbox.permit_decision_delay_s = 1.0
        self.simulators = start_simulators(s, load_seed(), f"http://127.0.0.1:{self.api_ports[0]}")
        env = {k: v for k, v in os.environ.items() if not k.startswith("YWTB_")}
        env |= settings_env(s)
        env |= {
            "YWTB_LOG_LEVEL": "INFO",
            "YWTB_SWEEPER_INTERVAL_S": "2",
            "YWTB_SWEEPER_GRACE_S": "5",
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        }
        self.env = env
        for n, port in enumerate(self.api_ports, 1):
            self._process(f"serve-{n}", ["serve", "--port", str(port)])
        for n in (1, 2):
            self._process(f"relay-{n}", ["relay"])
        for name in WORKERS:
            self._process(f"worker-{name}", ["worker", name])
        say(f"{len(self.processes)} connector processes starting")

    def _process(self, name: str, args: list[str]) -> None:
        process = Process(name, args, self.env, self.logs / f"{name}.log")
        process.start()
        self.processes.append(process)

    async def wait_healthy(self, timeout_s: float = 60) -> None:
        async with httpx.AsyncClient(timeout=2) as http:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                try:
                    answers = [
                        await http.get(f"http://127.0.0.1:{p}/healthz") for p in self.api_ports
                    ]
                    if all(a.status_code == 200 for a in answers):
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.3)
        raise RuntimeError("the API processes did not become healthy")

    def stop(self) -> dict[str, float | None]:
        took = {p.name: p.terminate() for p in self.processes}
        for served in self.simulators.values():
            served.stop()
        self.broker.stop()
        self.postgres.stop("immediate")
        return took

    # -- load -----------------------------------------------------------------------

    async def _call(
        self, http: httpx.AsyncClient, kind: str, method: str, url: str, **kwargs: Any
    ) -> httpx.Response | None:
        started = time.monotonic()
        try:
            response = await http.request(method, url, **kwargs)
        except httpx.TransportError:
            self.ledger.answers.append(Answer(kind, None, False, time.monotonic() - started))
            return None
        self.ledger.answers.append(
            Answer(
                kind,
                response.status_code,
                "retry-after" in response.headers,
                time.monotonic() - started,
            )
        )
        return response

    def _api(self) -> str:
        return f"http://127.0.0.1:{random.choice(self.api_ports)}"

    async def _until_acknowledged(
        self, kind: str, method: str, path: str, body: dict[str, Any], http: httpx.AsyncClient
    ) -> dict[str, Any] | None:
        """Send until a 2xx (same Idempotency-Key each time), as a careful client would."""
        key = uuid.uuid4().hex
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            response = await self._call(
                http,
                kind,
                method,
                f"{self._api()}{path}",
                json=body,
                headers={"Idempotency-Key": key},
            )
            if response is not None and response.is_success:
                answer: dict[str, Any] = response.json()
                return answer
            if response is not None and response.status_code not in (429, 503):
                say(f"{kind} refused {response.status_code}: {response.text[:300]}")
                return None
            await asyncio.sleep(float((response and response.headers.get("retry-after")) or 0.5))
        return None

    async def applications(self, http: httpx.AsyncClient) -> None:
        while not self.stop_load.is_set():
            credential, voltage, capacity, business, project, expected = random.choice(SCENARIOS)
            body = {
                "applicant": {"credential_type": "uscc", "credential_no": credential},
                "site": {"address": "上海市闵行区剑川路930号", "district_code": "310112"},
                "request": {
                    "business_type": business,
                    "voltage_level": voltage,
                    "capacity_kva": capacity,
                },
                "project_code": project,
            }
            answer = await self._until_acknowledged(
                "application", "POST", "/api/v1/applications", body, http
            )
            if answer is not None:
                self.ledger.applications[answer["id"]] = expected
                if expected == "ready" and random.random() < 0.3:
                    stages = STAGES.get(voltage) or STAGES[(voltage, business)]
                    self._spawn(self.progress(http, answer["id"], stages))
            await asyncio.sleep(random.uniform(0.05, 0.3))

    async def cases(self, http: httpx.AsyncClient) -> None:
        n = 0
        while not self.stop_load.is_set():
            n += 1
            application_id = await self.file_case(http, f"SHDRILL{int(time.time())}{n:05d}")
            if application_id is not None:
                self._spawn(self.progress(http, application_id, STAGES["0.4kV"]))
            await asyncio.sleep(random.uniform(0.5, 1.5))

    async def file_case(self, http: httpx.AsyncClient, case_no: str) -> str | None:
        """A customer files a case on 一网通办, again until acknowledged; its application id."""
        filing = {
            "case_no": case_no,
            "item_code": "310100-GDYD-001",
            "credential_type": "uscc",
            "credential_no": "91310106MA1FP5221E",
            "applicant_name": "上海静安悦享餐饮管理有限公司",
            "district_code": "310106",
            "site_address": "上海市静安区南京西路1266号",
            "business_type": "new_connection",
            "voltage_level": "0.4kV",
            "capacity_kva": 100,
            "filed_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
            "callback_app_id": CALLBACK_APP_ID,
            "callback_secret": CALLBACK_KEY,
            "max_attempts": 3,
        }
        for _ in range(40):
            filing["callback_url"] = f"{self._api()}/callbacks/ywtb/cases"
            with contextlib.suppress(httpx.HTTPError):
                response = await http.post(
                    f"{self.simulators['ywtb'].url}/_admin/file-case", json=filing, timeout=30
                )
                if response.json()["delivered"]:
                    break
            await asyncio.sleep(1)
        else:
            say(f"case {case_no} never acknowledged")
            return None
        application_id = await self._case_application(case_no)
        if application_id is not None:
            self.ledger.cases[case_no] = application_id
            self.ledger.applications[application_id] = "ready"
        return application_id

    async def _case_application(self, case_no: str) -> str | None:
        for _ in range(60):
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                conn = await asyncpg.connect(self._dsn(), timeout=5)
                try:
                    found: str | None = await conn.fetchval(
                        "SELECT application_id FROM cases WHERE case_no = $1", case_no
                    )
                finally:
                    await conn.close()
                if found:
                    return found
            await asyncio.sleep(1)
        return None

    async def progress(
        self, http: httpx.AsyncClient, application_id: str, stages: list[str]
    ) -> None:
        """Report the application's stages in order, each once acknowledged."""
        done = self.ledger.reported.setdefault(application_id, [])
        for stage in stages:
            await asyncio.sleep(random.uniform(0.2, 1.0))
            body: dict[str, Any] = {"stage": stage, "handler": "闵行供电服务中心 演练"}
            if stage == "completed":
                body["result_code"] = "01"
            answer = await self._until_acknowledged(
                "progress", "POST", f"/api/v1/applications/{application_id}/progress", body, http
            )
            if answer is None:
                return
            done.append(stage)

    def _spawn(self, work: Awaitable[None]) -> None:
        self.reporting.append(asyncio.ensure_future(work))

    async def health(self, http: httpx.AsyncClient) -> None:
        while not self.stop_load.is_set():
            for port in self.api_ports:
                await self._call(http, "healthz", "GET", f"http://127.0.0.1:{port}/healthz")
            await asyncio.sleep(1)

    # -- faults ---------------------------------------------------------------------

    async def kill_random(self, count: int) -> None:
        victims = random.sample(self.processes, count)
        for victim in victims:
            say(f"SIGKILL {victim.name}")
            victim.kill()
        await asyncio.sleep(2)
        for victim in victims:
            victim.start()

    async def broker_restart(self) -> None:
        say("SIGKILL the broker; a new, empty one on the same port in 3 s")
        process = self.broker._process
        assert process is not None
        process.kill()
        process.wait(timeout=10)
        await asyncio.sleep(3)
        self.broker = DevBroker(port=self.broker.port, log_file=self.root / "broker.log").start()

    async def postgres_restart(self) -> None:
        say("PostgreSQL: immediate shutdown; started again in 3 s")
        await asyncio.to_thread(self.postgres.stop, "immediate")
        await asyncio.sleep(3)
        await asyncio.to_thread(self.postgres.start)

    async def licence_outage(self, seconds: float) -> None:
        say(f"licence platform down for {seconds:.0f} s (longer than the retry budget)")
        await self._faults("licence", {"down": True})
        await asyncio.sleep(seconds)
        await self._faults("licence", {"down": False})
        say("licence platform back")

    async def _faults(self, platform: str, faults: dict[str, Any]) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            await http.put(f"{self.simulators[platform].url}/_admin/faults", json=faults)

    async def reject_a_case(self, http: httpx.AsyncClient) -> None:
        """一网通办 refuses a case for good, then accepts it; ops replays its dead letters."""
        ywtb = self.simulators["ywtb"].url
        case_no = f"SHDRILLREJECT{int(time.time())}"
        await http.put(f"{ywtb}/_admin/reject", json=[case_no])
        application_id = await self.file_case(http, case_no)
        if application_id is None:
            return
        say(f"一网通办 rejects case {case_no}; its stages are reported meanwhile")
        await self.progress(http, application_id, STAGES["0.4kV"])
        dead: list[str] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(dead) < len(STAGES["0.4kV"]):
            await asyncio.sleep(3)
            letters = await self.dead_letters()
            dead = [d["event_id"] for d in letters if d.get("key") == application_id]
        self.ledger.deliberate_dead.update(dead)
        await http.delete(f"{ywtb}/_admin/reject")
        say(f"一网通办 accepts case {case_no} again; replaying its {len(dead)} dead letter(s)")
        if dead:
            replay = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "gateway.cli", "dlq", "replay", *dead],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if replay.returncode != 0:
                say(f"dlq replay failed: {replay.stderr[-500:]}")

    async def dead_letters(self) -> list[dict[str, Any]]:
        listed = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "gateway.cli", "dlq", "list"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return [json.loads(line) for line in listed.stdout.splitlines() if line.startswith("{")]

    async def faults(self, http: httpx.AsyncClient) -> None:
        d = self.duration_s
        schedule: list[tuple[float, Callable[[], Awaitable[None]]]] = [
            (0.10, lambda: self.kill_random(2)),
            (0.20, self.broker_restart),
            (0.35, self.postgres_restart),
            (0.45, lambda: self.licence_outage(max(20.0, 0.15 * d))),
            (0.50, lambda: self.reject_a_case(http)),
            (0.70, lambda: self.kill_random(3)),
            (0.85, lambda: self.kill_random(2)),
        ]
        started = time.monotonic()
        running: list[asyncio.Task[None]] = []
        for at, fault in schedule:
            await asyncio.sleep(max(0.0, started + at * d - time.monotonic()))
            running.append(asyncio.ensure_future(fault()))
        await asyncio.gather(*running)

    # -- the end --------------------------------------------------------------------

    def _dsn(self) -> str:
        return self.postgres.url.replace("postgresql+asyncpg://", "postgresql://")

    async def _store(self) -> dict[str, Any]:
        conn = await asyncpg.connect(self._dsn(), timeout=10)
        try:
            statuses = dict(
                await conn.fetch(
                    "SELECT id, status FROM applications WHERE id = ANY($1::text[])",
                    list(self.ledger.applications),
                )
            )
            unsent = await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            stages = await conn.fetch(
                "SELECT application_id, seq, event_id FROM stage_changes"
                " ORDER BY application_id, seq"
            )
        finally:
            await conn.close()
        changes: dict[str, list[tuple[int, str]]] = {}
        for row in stages:
            changes.setdefault(row["application_id"], []).append((row["seq"], row["event_id"]))
        return {"statuses": statuses, "unsent": unsent, "changes": changes}

    async def _pushes(self) -> dict[str, list[tuple[int, str]]]:
        async with httpx.AsyncClient(timeout=10) as http:
            pushes = (await http.get(f"{self.simulators['ywtb'].url}/_admin/pushes")).json()
        by_case: dict[str, list[tuple[int, str]]] = {}
        for push in pushes["pushes"]:
            by_case.setdefault(push["BJBH"], []).append((push["XH"], push["SJID"]))
        return by_case

    async def _lagging(self) -> list[dict[str, Any]]:
        """The partitions a worker's group has not consumed to the end."""
        rows = await worker_lag(self.settings.kafka, dict(WORKER_TOPICS))
        return [row for row in rows if row["lag"]]

    async def settled(self) -> dict[str, Any]:
        store = await self._store()
        pushes = await self._pushes()
        return {**store, "pushes": pushes, "lagging": await self._lagging()}

    def _is_settled(self, state: dict[str, Any]) -> bool:
        terminal = all(
            state["statuses"].get(a) in ("ready", "rejected") for a in self.ledger.applications
        )
        pushed = all(
            pushes_match(state["pushes"].get(c, []), state["changes"].get(a, []))
            for c, a in self.ledger.cases.items()
        )
        return terminal and pushed and state["unsent"] == 0 and not state["lagging"]

    async def run(self) -> tuple[list[tuple[str, bool, str]], dict[str, float | None]]:
        self.start()
        try:
            await self.wait_healthy()
            say(f"load and faults for {self.duration_s:.0f} s")
            async with httpx.AsyncClient(
                timeout=10, headers={"Authorization": f"Bearer {API_KEY}"}
            ) as http:
                load = [
                    asyncio.ensure_future(self.applications(http)),
                    asyncio.ensure_future(self.applications(http)),
                    asyncio.ensure_future(self.cases(http)),
                    asyncio.ensure_future(self.health(http)),
                ]
                faults = asyncio.ensure_future(self.faults(http))
                await asyncio.sleep(self.duration_s)
                self.stop_load.set()
                await asyncio.gather(*load, faults)
                say("load stopped; waiting for in-flight progress reports")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.gather(*self.reporting), 180)
            say("waiting for the connector to settle (at most 180 s)")
            state: dict[str, Any] = {}
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    state = await self.settled()
                    if self._is_settled(state):
                        break
                await asyncio.sleep(3)
            dead = await self.dead_letters()
            rows = self.invariants(state, dead)
        finally:
            took = self.stop()
        return rows, took

    def invariants(
        self, state: dict[str, Any], dead: list[dict[str, Any]]
    ) -> list[tuple[str, bool, str]]:
        ledger = self.ledger
        statuses = state.get("statuses", {})
        wrong = [a for a, expected in ledger.applications.items() if statuses.get(a) != expected]
        changes, pushes = state.get("changes", {}), state.get("pushes", {})
        lagging: list[dict[str, Any]] | None = state.get("lagging")
        bad_cases = [
            c
            for c, a in ledger.cases.items()
            if not pushes_match(pushes.get(c, []), changes.get(a, []))
        ]
        unexpected_dead = [d for d in dead if d["event_id"] not in ledger.deliberate_dead]
        answers = [a for a in ledger.answers if a.kind != "healthz"]
        five = [a for a in answers if a.status is not None and a.status >= 500]
        bad_five = [a for a in five if not (a.status == 503 and a.retry_after)]
        slow = max((a.seconds for a in answers), default=0.0)
        health = [a for a in ledger.answers if a.kind == "healthz"]
        counts = Counter(a.status for a in answers)
        return [
            (
                "every acknowledged application ready or rejected (as its evidence says)",
                not wrong and bool(ledger.applications),
                f"{len(ledger.applications) - len(wrong)}/{len(ledger.applications)}"
                + (f"; e.g. {wrong[0]}={statuses.get(wrong[0])}" if wrong else ""),
            ),
            (
                "every outbox row published",
                state.get("unsent") == 0,
                f"{state.get('unsent')} unsent",
            ),
            (
                "every push delivered once and in stage order",
                not bad_cases and bool(ledger.cases),
                f"{len(ledger.cases) - len(bad_cases)}/{len(ledger.cases)} cases"
                + (f"; e.g. {bad_cases[0]}" if bad_cases else ""),
            ),
            (
                "no dead letter but the deliberate permanent ones",
                not unexpected_dead,
                f"{len(dead)} still dead, {len(ledger.deliberate_dead)} deliberate (replayed)",
            ),
            (
                "consumer lag 0",
                lagging == [],  # never read: not shown to hold
                f"lag {sum(r['lag'] for r in lagging) if lagging is not None else None}"
                + "".join(
                    f"; {r['group']} {r['topic']}[{r['partition']}] {r['committed']}..{r['end']}"
                    f" (oldest {r['age_s']} s)"
                    for r in lagging or []
                ),
            ),
            (
                "no 5xx but 503 with Retry-After",
                not bad_five,
                f"{len(answers)} answers: "
                + ", ".join(f"{k or 'no answer'}: {v}" for k, v in sorted(counts.items(), key=str))
                + f"; slowest {slow:.1f} s",
            ),
            (
                "/healthz answered while its process ran",
                all(a.status in (200, None) for a in health),
                f"{sum(a.status == 200 for a in health)}/{len(health)} polls 200",
            ),
        ]


def pushes_match(pushed: list[tuple[int, str]], changes: list[tuple[int, str]]) -> bool:
    """The case shows exactly the application's stage changes, once each, in order."""
    return bool(changes) and pushed == changes


def print_table(rows: list[tuple[str, bool, str]]) -> None:
    width = max(len(name) for name, _, _ in rows)
    sys.stdout.write(f"\n| {'invariant':<{width}} | holds | detail |\n")
    sys.stdout.write(f"|{'-' * (width + 2)}|-------|--------|\n")
    for name, holds, detail in rows:
        sys.stdout.write(f"| {name:<{width}} | {'yes' if holds else 'NO':<5} | {detail} |\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.drill", description=__doc__)
    parser.add_argument("--duration", type=float, default=600, help="seconds of load and faults")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="ywtb-drill-"))
    say(f"work folder {root}")
    try:
        rows, took = asyncio.run(Drill(args.duration, root).run())
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    slowest = max(took.items(), key=lambda kv: 1e9 if kv[1] is None else kv[1])
    rows.append(
        (
            "SIGTERM ends every process within 10 s",
            all(t is not None and t <= 10 for t in took.values()),
            f"slowest {slowest[0]}: "
            + ("killed after 10 s" if slowest[1] is None else f"{slowest[1]:.1f} s"),
        )
    )
    print_table(rows)
    return 0 if all(holds for _, holds, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
