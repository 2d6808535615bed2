"""Engine, sessions and migrations.

Migrations run on start (``open_store``); on PostgreSQL an advisory lock keeps
two processes starting together from migrating at once.

A pooled PostgreSQL connection is pinged before use only when it has been idle
for ``StoreSettings.ping_idle_s`` (one that went with a restart of the store is
replaced before a request meets it); a hot pool is not pinged. A connection lost in use
fails that unit of work (``StoreUnavailable``: 503 with Retry-After) and
invalidates every pooled connection older than the failure.

``Sessions`` is the store boundary: every session it opens (and every
``transaction``) translates a database that is away, busy or out of
connections into ``StoreUnavailable`` (``store_errors``), so no caller has to
remember to. ``IntegrityError`` is left as it is: callers rely on it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Dialect, Table, event, insert, inspect, text
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    InterfaceError,
    InvalidatePoolError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import ConnectionPoolEntry

from gateway.settings import StoreSettings
from schemas.errors import StoreUnavailable

MIGRATIONS = Path(__file__).with_name("migrations")
_MIGRATION_LOCK = 0x79777462  # "ywtb"

#: SQLSTATE classes and codes that say "try again": connection exceptions (08),
#: operator intervention such as a server shutting down or starting (57P0x),
#: too many connections (53300), serialization failure (40001), deadlock (40P01).
_TRANSIENT_SQLSTATES = ("08", "57P0", "53300", "40001", "40P01")


class Sessions:
    """Opens sessions on the store; each one translates store failures (``store_errors``).

    Used as ``async with sessions() as session`` or through ``transaction(sessions)``.
    """

    def __init__(self, maker: async_sessionmaker[AsyncSession]) -> None:
        self.maker = maker

    @property
    def engine(self) -> AsyncEngine:
        engine: AsyncEngine = self.maker.kw["bind"]
        return engine

    def __call__(self) -> AbstractAsyncContextManager[AsyncSession]:
        return self._session()

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[AsyncSession]:
        with store_errors():
            async with self.maker() as session:
                yield session


def create_engine(settings: StoreSettings) -> AsyncEngine:
    url = settings.url
    kwargs: dict[str, Any] = {
        "pool_size": settings.pool_size,
        "max_overflow": settings.max_overflow,
        "pool_timeout": settings.pool_timeout_s,
    }
    if url.startswith("sqlite"):
        _ensure_parent_dir(url)
        kwargs["connect_args"] = {"timeout": 30}
    else:
        connect_args: dict[str, Any] = {"timeout": settings.connect_timeout_s}
        if settings.schema_name:
            connect_args["server_settings"] = {"search_path": settings.schema_name}
        kwargs["connect_args"] = connect_args
    engine = create_async_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    else:
        event.listen(engine.sync_engine, "checkin", _idle_from)
        event.listen(
            engine.sync_engine, "checkout", _ping_if_idle(engine.dialect, settings.ping_idle_s)
        )
    return engine


def _idle_from(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(
    dialect: Dialect, idle_s: float
) -> Callable[[Any, ConnectionPoolEntry, Any], None]:
    """A checkout listener that pings a connection idle for ``idle_s``; a lost one is
    replaced, with every connection pooled before it (the pool retries the checkout)."""

    def checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < idle_s:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_connection, None):
                raise InvalidatePoolError(f"idle connection lost: {_first_line(exc)}") from exc
            raise

    return checkout


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


def _upgrade(connection: Connection, revision: str = "head") -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
    command.upgrade(config, revision)


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to the newest migration (or to ``revision``)."""
    with store_errors():
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade, revision)


async def open_store(settings: StoreSettings) -> tuple[AsyncEngine, Sessions]:
    engine = create_engine(settings)
    await migrate(engine)
    return engine, Sessions(async_sessionmaker(engine, expire_on_commit=False))


@contextmanager
def store_errors() -> Iterator[None]:
    """Translate a database that is away, busy or out of connections into ``StoreUnavailable``.

    The one translator of SQLAlchemy and driver errors; ``Sessions`` applies it
    to every session. Integrity errors and programming errors pass unchanged.
    """
    try:
        yield
    except IntegrityError:
        raise
    except PoolTimeout as exc:
        raise StoreUnavailable(f"store busy: no connection free ({exc})") from exc
    except (OperationalError, InterfaceError) as exc:
        raise StoreUnavailable(f"store unreachable: {_first_line(exc)}") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise StoreUnavailable(f"store connection lost: {_first_line(exc)}") from exc
        sqlstate = getattr(exc.orig, "sqlstate", None) or ""
        if sqlstate.startswith(_TRANSIENT_SQLSTATES):
            raise StoreUnavailable(
                f"store asked to try again ({sqlstate}): {_first_line(exc)}", sqlstate=sqlstate
            ) from exc
        raise
    except OSError as exc:  # the driver could not connect (refused, reset, timed out)
        raise StoreUnavailable(f"store unreachable: {type(exc).__name__}: {exc}") from exc


def _first_line(exc: Exception) -> str:
    return str(exc).split("\n", 1)[0][:300]


@asynccontextmanager
async def transaction(sessions: Sessions) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit on success, roll back on any error."""
    async with sessions() as session, session.begin():
        yield session


def conflict_insert(dialect: str) -> Callable[..., pg.Insert | sqlite.Insert]:
    """The ``insert`` of ``dialect`` (PostgreSQL, else SQLite): the one that has
    ``on_conflict_do_nothing`` / ``on_conflict_do_update``."""
    return pg.insert if dialect == "postgresql" else sqlite.insert


async def insert_new(session: AsyncSession, *rows: DeclarativeBase) -> None:
    """Insert new mapped ``rows`` now: one Core statement per table (several rows of a
    table in one), in the order the tables first appear.

    On a hot path the ORM's unit of work costs more than the inserts themselves. The
    rows are not added to ``session`` (ORM events such as ``before_insert`` do not
    run): they stay what was written, to answer from. Attributes never set are left to
    the columns' defaults.
    """
    tables: dict[Table, list[dict[str, Any]]] = {}
    for row in rows:
        state = inspect(row)
        values = {
            prop.columns[0].name: state.dict[prop.key]
            for prop in state.mapper.column_attrs
            if prop.key in state.dict
        }
        tables.setdefault(state.mapper.local_table, []).append(values)  # type: ignore[arg-type]
    for table, table_rows in tables.items():
        await session.execute(insert(table), table_rows)
