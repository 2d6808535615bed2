"""Engine, sessions and migrations.

Migrations run on start (``open_store``); on PostgreSQL an advisory lock keeps
two processes starting together from migrating at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from gateway.settings import StoreSettings
from schemas.errors import StoreUnavailable

MIGRATIONS = Path(__file__).with_name("migrations")
_MIGRATION_LOCK = 0x79777462  # "ywtb"

Sessions = async_sessionmaker[AsyncSession]


def create_engine(settings: StoreSettings) -> AsyncEngine:
    url = settings.url
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        _ensure_parent_dir(url)
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs["pool_size"] = settings.pool_size
        if settings.schema_name:
            kwargs["connect_args"] = {"server_settings": {"search_path": settings.schema_name}}
    engine = create_async_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _ensure_parent_dir(url: str) -> None:
    path = url.split(":///", 1)[-1].split("?", 1)[0]
    if path and path != ":memory:":
        Path(path).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _upgrade(connection: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
    command.upgrade(config, "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest migration."""
    with store_errors():
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade)


async def open_store(settings: StoreSettings) -> tuple[AsyncEngine, Sessions]:
    engine = create_engine(settings)
    await migrate(engine)
    return engine, async_sessionmaker(engine, expire_on_commit=False)


@contextmanager
def store_errors() -> Iterator[None]:
    """Translate an unreachable database into ``StoreUnavailable``."""
    try:
        yield
    except (OperationalError, OSError) as exc:
        raise StoreUnavailable(f"store unreachable: {exc}") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise StoreUnavailable(f"store connection lost: {exc}") from exc
        raise


@asynccontextmanager
async def transaction(sessions: Sessions) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit on success, roll back on any error."""
    async with sessions() as session, session.begin():
        yield session
