"""Fixtures shared by every tier: the development broker, the store on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.bootstrap import Container, bootstrap
from gateway.devbroker import DevBroker
from gateway.settings import KafkaSettings, RelaySettings, Settings, StoreSettings

POSTGRES_ENV = "YWTB_TEST_POSTGRES_URL"
_postgres_skipped: list[str] = []


@pytest.fixture
def broker() -> Iterator[DevBroker]:
    """A fresh Kafka-compatible broker on a free loopback port, stopped after the test."""
    with DevBroker() as running:
        yield running


async def _postgres_schema(url: str, schema: str, *, create: bool) -> None:
    import asyncpg

    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"{POSTGRES_ENV}={url} is set but PostgreSQL is unreachable: {exc}")
    try:
        if create:
            await conn.execute(f'CREATE SCHEMA "{schema}"')
        else:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreSettings]:
    """The store under test: every integration test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield StoreSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'ywtb.db'}")
        return
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        _postgres_skipped.append(request.node.nodeid)
        pytest.skip(f"PostgreSQL tier did not run: {POSTGRES_ENV} is not set")
    schema = f"t_{uuid.uuid4().hex[:16]}"
    asyncio.run(_postgres_schema(url, schema, create=True))
    try:
        yield StoreSettings(url=url, schema_name=schema)
    finally:
        asyncio.run(_postgres_schema(url, schema, create=False))


@pytest.fixture
def settings(store_settings: StoreSettings, broker: DevBroker) -> Settings:
    return Settings(
        store=store_settings,
        kafka=KafkaSettings(bootstrap=broker.bootstrap, request_timeout_s=5),
        relay=RelaySettings(poll_interval_s=0.05, backoff_max_s=1.0, lease_s=5),
    )


@pytest.fixture
async def container(settings: Settings) -> AsyncIterator[Container]:
    built = await bootstrap(settings)
    try:
        yield built
    finally:
        await built.aclose()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _postgres_skipped:
        terminalreporter.write_sep(
            "!",
            f"PostgreSQL tier did NOT run ({len(_postgres_skipped)} tests): set {POSTGRES_ENV}, "
            "e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/test",
            yellow=True,
        )
