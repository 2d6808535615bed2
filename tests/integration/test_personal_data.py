"""Personal data at rest and the exchange log, end to end (issue 9, parts 4 and 5).

A resident applies through the API and through a 一网通办 case; the relay and
the workers run; then the resident's ID number is looked for, in every form a
careless write would leave it, in the store's files (the SQLite WAL included)
or every PostgreSQL row, on every topic, and in the logs.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select, text
from stdnum.cn import ric

from adapters.signing import verify_signature
from adapters.simulation import ServedApp
from gateway.api.app import create_app
from gateway.bootstrap import Container
from gateway.logs import JsonFormatter, install_mask
from gateway.settings import Settings
from gateway.store.models import (
    Application,
    AuditCheckpoint,
    AuditRecord,
    ReceivedCallback,
    credential_index,
)
from schemas.cases import InboundCase
from schemas.events import all_topics
from tests.integration.conftest import Platform
from tests.integration.test_applications import JINGAN, low_voltage
from tests.integration.test_async_flows import application_of, file_case, post_signed
from tests.kafka import read_topic
from tests.running import eventually, running, settings_env


def resident_id(first_17: str) -> str:
    number = first_17 + ric.calc_check_digit(first_17 + "?")  # it skips the last character
    assert ric.is_valid(number)
    return number


# 居民身份证号 of two residents of 静安区 (check characters computed, as on a real card).
RESIDENT = resident_id("31010619850312402")
CASE_RESIDENT = resident_id("31010619920708153")
APPLICANT_NAME = "林晓梅"
HANDLER_NAME = "静安供电服务中心 赵德柱"
HOME = "上海市静安区康定路1000弄8号402室"

FULL_WIDTH = str.maketrans("0123456789X", "０１２３４５６７８９Ｘ")


def variants(number: str) -> set[bytes]:
    """The forms a resident ID leaks in: as is, lower case, without its check character,
    full-width, split by spaces or hyphens — in UTF-8 and UTF-16 (JSON escapes aside)."""
    forms = {
        number,
        number.lower(),
        number[:17],
        number.translate(FULL_WIDTH),
        f"{number[:6]} {number[6:14]} {number[14:]}",
        f"{number[:6]}-{number[6:14]}-{number[14:]}",
    }
    return {f.encode("utf-8") for f in forms} | {f.encode("utf-16-le") for f in forms}


def secrets_of_the_run() -> dict[str, set[bytes]]:
    return {
        "resident": variants(RESIDENT),
        "case resident": variants(CASE_RESIDENT),
        "applicant name": {APPLICANT_NAME.encode()},
        "handler name": {"赵德柱".encode()},
        "home address": {"康定路1000弄".encode()},
    }


def found_in(blob: bytes, what: dict[str, set[bytes]]) -> list[str]:
    return sorted(name for name, forms in what.items() if any(f in blob for f in forms))


def a_resident_case(case_no: str) -> InboundCase:
    return InboundCase(
        case_no=case_no,
        item_code="310100-GDYD-001",
        credential_type="resident_id",
        credential_no=CASE_RESIDENT,
        applicant_name=APPLICANT_NAME,
        district_code="310106",
        site_address=HOME,
        business_type="new_connection",
        voltage_level="0.4kV",
        capacity_kva=12,
        filed_at=datetime(2026, 11, 26, 10, 0, tzinfo=UTC),
    )


def resident_body() -> dict[str, Any]:
    return {
        "applicant": {"credential_type": "resident_id", "credential_no": RESIDENT},
        "site": {"address": HOME, "district_code": "310106"},
        "request": {"business_type": "new_connection", "voltage_level": "0.4kV", "capacity_kva": 8},
    }


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """Every log line of the connector, as it would be written (JSON, masked)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    install_mask()
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def store_files(settings: Settings) -> dict[str, bytes]:
    path = Path(settings.store.url.split(":///", 1)[1])
    return {
        f.name: f.read_bytes()
        for f in (path, Path(f"{path}-wal"), Path(f"{path}-shm"))
        if f.exists()
    }


async def store_rows(connector: Container) -> bytes:
    """Every row of every table, as the database prints it (PostgreSQL)."""
    async with connector.engine.connect() as conn:
        tables = (
            await conn.execute(
                text(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = current_schema()"
                )
            )
        ).scalars()
        dump = []
        for table in list(tables):
            rows = await conn.execute(text(f'SELECT t::text FROM "{table}" t'))
            dump += [f"{table}: {row}" for row in rows.scalars()]
    assert any(line.startswith("applications:") for line in dump)
    return "\n".join(dump).encode()


async def store_contents(connector: Container, settings: Settings) -> dict[str, bytes]:
    if connector.engine.dialect.name == "sqlite":
        files = store_files(settings)
        assert "ywtb.db" in files
        return files
    return {"postgresql rows": await store_rows(connector)}


async def topic_contents(settings: Settings) -> bytes:
    assert settings.kafka.bootstrap
    seen = []
    for topic in all_topics():
        main = not topic.endswith((".retry", ".dlq"))
        records = await read_topic(
            settings.kafka.bootstrap, topic, expect=1 if main else 0, timeout_s=10 if main else 3
        )
        for record in records:
            seen += [record.key or b"", record.value or b""]
            seen += [value for _, value in record.headers]
    return b"\n".join(seen)


async def test_a_residents_id_number_is_nowhere_in_clear(
    connector: Container,
    platforms: dict[str, Platform],
    settings: Settings,
    api_port: int,
    logs: io.StringIO,
    capfd: pytest.CaptureFixture[str],
) -> None:
    secrets = secrets_of_the_run()
    during: dict[str, bytes] = {}
    with ServedApp(create_app(settings), port=api_port) as served:
        async with httpx.AsyncClient(
            base_url=served.url, headers={"Authorization": "Bearer sandbox-key"}, timeout=30
        ) as api:
            created = await api.post("/api/v1/applications", json=resident_body())
            assert created.status_code == 201, created.text
            mine = created.json()["id"]
            await file_case(platforms, settings, api_port, a_resident_case("SH-PII-0001"))
            from_case = await application_of(connector, "SH-PII-0001")
            reported = await api.post(
                f"/api/v1/applications/{from_case}/progress",
                json={"stage": "accepted", "handler": HANDLER_NAME},
            )
            assert reported.status_code == 201, reported.text
            assert reported.json()["handler"] == HANDLER_NAME

            async def told_everyone() -> bool:
                items = (await api.get(f"/api/v1/applications/{from_case}/events")).json()
                delivered = {
                    (item["type"].rsplit(".", 2)[-2], d["worker"])
                    for item in items
                    for d in item["deliveries"]
                    if d["status"] == "delivered"
                }
                return (
                    len(items) >= 4
                    and {("case", "marketing"), ("application", "ywtb-status")} <= delivered
                )

            async with running(connector, "timeline", "evidence", "marketing", "ywtb-status"):
                await eventually(told_everyone)
                during = await store_contents(connector, settings)

            # The owner still reads the number back.
            answer = await api.get(f"/api/v1/applications/{mine}")
            assert answer.status_code == 200
            assert answer.json()["applicant"] == {
                "credential_type": "resident_id",
                "credential_no": RESIDENT,
            }
    await connector.exchanges.flush()

    # The marketing system was told the applicant's name, read from the store.
    notices = platforms["marketing"].control.received
    assert any(APPLICANT_NAME in r.body.decode() for r in notices if r.body)

    after = await store_contents(connector, settings)
    for name, blob in [*during.items(), *after.items()]:
        assert found_in(blob, secrets) == [], f"in clear in the store ({name})"
    assert found_in(await topic_contents(settings), secrets) == [], "in clear on a topic"
    captured = capfd.readouterr()
    for name, blob in [
        ("log lines", logs.getvalue()),
        ("stderr", captured.err),
        ("stdout", captured.out),
    ]:
        assert found_in(blob.encode(), {"resident": variants(RESIDENT)}) == [], name
        assert found_in(blob.encode(), {"case": variants(CASE_RESIDENT)}) == [], name
    assert "request" in logs.getvalue()  # the log did capture the run

    async with connector.sessions() as session:
        application = await session.get(Application, mine)
        assert application is not None
        assert application.credential_index == credential_index("resident_id", RESIDENT)
        read = await session.scalar(
            select(AuditRecord).where(
                AuditRecord.purpose == mine, AuditRecord.operation == "GET application"
            )
        )
        callback = await session.get(ReceivedCallback, ("ywtb", "SH-PII-0001"))
        outbound = set(await session.scalars(select(AuditRecord.actor)))
    assert read is not None and read.actor == "client:sandbox"
    assert read.subject == application.credential_index
    assert {"ywtb", "marketing"} <= outbound
    # The stored callback can be verified again, from what was kept with it.
    assert callback is not None and callback.signed_request is not None
    kept = callback.signed_request
    verified = verify_signature(
        kept["method"],
        kept["target"],
        base64.b64decode(kept["body_base64"]),
        kept["headers"],
        lookup_secret=lambda _app: settings.ywtb.callback_key.get_secret_value(),
        allowed_algorithms={settings.ywtb.callback_algorithm},
        window_s=10**9,
    )
    assert verified.app_id == settings.ywtb.callback_app_id


def _audit_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YWTB_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "audit", *args],
        env={**env, **settings_env(settings)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _change(connector: Container, settings: Settings, sql: str, *params: Any) -> None:
    """Change the store behind the connector's back, as someone with file or SQL access would."""
    if connector.engine.dialect.name == "sqlite":
        path = settings.store.url.split(":///", 1)[1]
        with sqlite3.connect(path) as db:  # the sqlite3 module, not the connector
            db.execute(sql.replace("$1", "?").replace("$2", "?"), params)
        return
    import asyncpg

    assert settings.store.schema_name
    url = settings.store.url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(url, server_settings={"search_path": settings.store.schema_name})
    try:
        await conn.execute(sql, *params)
    finally:
        await conn.close()


async def test_audit_verify_names_the_seq_of_a_changed_or_deleted_record(
    connector: Container,
    platforms: dict[str, Platform],
    settings: Settings,
    api_port: int,
    tmp_path: Path,
) -> None:
    with ServedApp(create_app(settings), port=api_port) as served:
        async with httpx.AsyncClient(
            base_url=served.url, headers={"Authorization": "Bearer sandbox-key"}, timeout=30
        ) as api:
            for _ in range(3):
                created = await api.post("/api/v1/applications", json=low_voltage(JINGAN))
                assert created.status_code == 201, created.text
                assert (await api.get(created.headers["Location"])).status_code == 200
            refused = await api.post(
                "/callbacks/ywtb/cases",
                content=b"{}",
                headers={"X-App-Id": "forger", "Content-Type": "application/json"},
            )
            assert refused.status_code == 401
            failed, _ = await post_signed(
                api,
                "/callbacks/ywtb/cases",
                {"BJBH": "SH-PII-0002"},
                app_id=settings.ywtb.callback_app_id,
                secret=settings.ywtb.callback_key.get_secret_value(),
            )
            assert failed.status_code == 422
            ready = (await api.get("/readyz")).json()["checks"]["exchange_log"]
            assert ready["ok"] is True and isinstance(ready["backlog"], int)
    await connector.exchanges.flush()
    async with connector.sessions() as session:
        rows = list(await session.scalars(select(AuditRecord).order_by(AuditRecord.seq)))
    assert len(rows) >= 7  # a licence fetch (then from the store), 3 reads, 3 callback records
    kinds = {(r.actor.split(":")[0], r.outcome.split(":")[0]) for r in rows}
    assert {
        ("licence", "http 200"),
        ("client", "read"),
        ("ywtb", "refused"),  # refused at the door
        ("ywtb", "verified"),  # signed right, then
        ("ywtb", "failed"),  # failed in handling: both recorded
    } <= kinds

    intact = await asyncio.to_thread(_audit_cli, settings, "verify")
    assert intact.returncode == 0, intact.stderr
    assert json.loads(intact.stdout) == {"ok": True, "records": len(rows)}

    # One byte of one record changed.
    target = rows[2]
    changed = target.outcome[:-1] + chr(ord(target.outcome[-1]) ^ 1)
    await _change(
        connector, settings, "UPDATE audit_log SET outcome = $1 WHERE seq = $2", changed, target.seq
    )
    broken = await asyncio.to_thread(_audit_cli, settings, "verify")
    assert broken.returncode == 1
    assert json.loads(broken.stdout)["seq"] == target.seq
    assert f"seq {target.seq}" in broken.stderr
    await _change(
        connector,
        settings,
        "UPDATE audit_log SET outcome = $1 WHERE seq = $2",
        target.outcome,
        target.seq,
    )
    assert (await asyncio.to_thread(_audit_cli, settings, "verify")).returncode == 0

    # An auditor's export verifies offline, without the store.
    exported = tmp_path / "audit.jsonl"
    assert (await asyncio.to_thread(_audit_cli, settings, "export", str(exported))).returncode == 0
    offline = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway.cli", "audit", "verify", "--file", str(exported)],
        env={k: v for k, v in os.environ.items() if not k.startswith("YWTB_")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert offline.returncode == 0, offline.stderr

    # Separately, one record deleted.
    gone = rows[1]
    await _change(connector, settings, "DELETE FROM audit_log WHERE seq = $1", gone.seq)
    deleted = await asyncio.to_thread(_audit_cli, settings, "verify")
    assert deleted.returncode == 1
    assert json.loads(deleted.stdout)["seq"] == gone.seq
    assert "missing" in deleted.stderr


async def raw_values(container: Container, sql: str) -> list[str]:
    async with container.engine.connect() as conn:
        return [str(v) for v in (await conn.execute(text(sql))).scalars()]


async def test_keys_rotate_re_encrypts_every_row_under_the_new_key(
    container: Container, settings: Settings
) -> None:
    from gateway.protect import install, keyring_of
    from schemas.applications import ApplicationRequest

    submitted = await container.applications.submit(
        ApplicationRequest.model_validate(resident_body()), client="alpha", idempotency_key=None
    )
    first_key = next(iter(settings.protection.keys))
    before = await raw_values(container, "SELECT request FROM applications")
    assert before and all(v.startswith(f"ywtb1:sm4-gcm:{first_key}:") for v in before)

    rotated = settings.model_copy(deep=True)
    rotated.protection.keys = {
        **settings.protection.keys,
        "2026-11": SecretStr("8c" * 16),
    }
    rotated.protection.current_key_id = "2026-11"
    env = {k: v for k, v in os.environ.items() if not k.startswith("YWTB_")}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway.cli", "keys", "rotate"],
        env={**env, **settings_env(rotated)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "applications.request: 1 of 1 rewritten" in done.stderr
    summary = json.loads(done.stdout)
    assert summary["applications.credential_no"] == {"total": 1, "rewritten": 1}
    assert summary["outbox.data"]["rewritten"] == summary["outbox.data"]["total"] > 0

    for column in ("request", "credential_no"):
        values = await raw_values(container, f"SELECT {column} FROM applications")
        assert all(v.startswith("ywtb1:sm4-gcm:2026-11:") for v in values), column
    # The old key can go: everything reads under the new one alone.
    only_new = rotated.model_copy(deep=True)
    only_new.protection.keys = {"2026-11": SecretStr("8c" * 16)}
    install(keyring_of(only_new.protection))
    try:
        again = await container.applications.get(submitted.application.id)
    finally:
        install(keyring_of(settings.protection))
    assert again.applicant.credential_no == RESIDENT
    assert again.site.address == HOME


async def test_two_writers_on_one_store_never_fork_the_chain(
    container: Container, settings: Settings
) -> None:
    from gateway.audit import AuditLog, Exchange, verify_store
    from gateway.store.db import open_store
    from gateway.supervise import Loops

    engine, sessions = await open_store(
        settings.store
    )  # a second process, as far as the store sees
    other = AuditLog(sessions, settings.protection, Loops())
    try:

        async def burst(log: AuditLog, name: str) -> None:
            for i in range(60):
                await log.record(Exchange(actor=name, operation=f"op {i}", outcome="ok"))
                if i % 7 == 0:
                    await asyncio.sleep(0)

        await asyncio.gather(burst(container.exchanges, "one"), burst(other, "two"))
        await asyncio.gather(container.exchanges.flush(), other.flush())
        checked, problem = await verify_store(
            container.sessions, settings.protection.audit_public_key
        )
    finally:
        await other.aclose()
        await engine.dispose()
    assert problem is None
    assert checked == 120
    async with container.sessions() as session:
        seqs = list(await session.scalars(select(AuditRecord.seq).order_by(AuditRecord.seq)))
        checkpoints = list(await session.scalars(select(AuditCheckpoint.seq)))
    assert seqs == list(range(1, 121))
    assert checkpoints and max(checkpoints) >= 100  # every 100 records, signed and verified


async def test_exchanges_a_moment_apart_are_appended_in_one_transaction(
    container: Container, settings: Settings
) -> None:
    """The licence and project calls of one application end a few ms apart: one batch."""
    from sqlalchemy import event

    from gateway.audit import AuditLog, Exchange, verify_store
    from gateway.supervise import Loops

    protection = settings.protection.model_copy(update={"audit_batch_wait_s": 0.5})
    log = AuditLog(container.sessions, protection, Loops())
    inserts: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT") and "audit_log" in statement:
            inserts.append(statement)

    event.listen(container.engine.sync_engine, "before_cursor_execute", count)
    try:
        await log.record(Exchange(actor="licence", operation="POST /ws/licence", outcome="ok"))
        await asyncio.sleep(0.05)
        await log.record(Exchange(actor="project", operation="GET /api/v1/projects", outcome="ok"))
        await log.flush()
    finally:
        event.remove(container.engine.sync_engine, "before_cursor_execute", count)
        await log.aclose()
    assert len(inserts) == 1
    checked, problem = await verify_store(container.sessions, protection.audit_public_key)
    assert problem is None
    async with container.sessions() as session:
        actors = list(await session.scalars(select(AuditRecord.actor).order_by(AuditRecord.seq)))
    assert actors[-2:] == ["licence", "project"] and checked == len(actors)


async def test_a_stopping_writer_writes_the_batch_it_is_gathering(
    container: Container, settings: Settings
) -> None:
    """Shut down while the writer waits for more: what it holds is written, not dropped."""
    from gateway.audit import AuditLog, Exchange
    from gateway.supervise import Loops

    protection = settings.protection.model_copy(update={"audit_batch_wait_s": 1.0})
    log = AuditLog(container.sessions, protection, Loops())
    await log.record(Exchange(actor="licence", operation="POST /ws/licence", outcome="ok"))
    await asyncio.sleep(0.05)  # taken from the queue, waiting for company
    assert log.backlog() == 1
    await log.aclose()
    assert log.backlog() == 0
    async with container.sessions() as session:
        actors = list(await session.scalars(select(AuditRecord.actor)))
    assert "licence" in actors
