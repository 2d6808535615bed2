"""Store errors translated once, at the store boundary: which are transient and which are not."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from gateway.store.db import store_errors
from schemas.errors import StoreUnavailable


class DriverError(Exception):
    """Stands in for a driver's exception: asyncpg's carry the SQLSTATE."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def dbapi(kind: type[DBAPIError], sqlstate: str | None = None, **kw: bool) -> DBAPIError:
    return kind("SELECT 1", {}, DriverError("boom", sqlstate), **kw)


@pytest.mark.parametrize(
    "error",
    [
        PoolTimeout("QueuePool limit of size 5 overflow 10 reached"),
        dbapi(OperationalError),  # sqlite "database is locked", connection refused
        dbapi(InterfaceError),  # connection closed under the driver
        dbapi(DBAPIError, connection_invalidated=True),
        dbapi(DBAPIError, "40001"),  # serialization failure
        dbapi(DBAPIError, "40P01"),  # deadlock detected
        dbapi(DBAPIError, "57P01"),  # the server is shutting down
        dbapi(DBAPIError, "08006"),  # connection failure
        dbapi(DBAPIError, "53300"),  # too many connections
        ConnectionRefusedError(111, "Connection refused"),
    ],
)
def test_a_store_that_is_away_or_busy_is_transient(error: Exception) -> None:
    with pytest.raises(StoreUnavailable) as caught, store_errors():
        raise error
    assert caught.value.__cause__ is error


@pytest.mark.parametrize(
    "error",
    [
        dbapi(IntegrityError, "23505"),  # callers rely on it (idempotency, races)
        dbapi(ProgrammingError, "42P01"),  # a bug, not an outage
        dbapi(DBAPIError, "22001"),  # data too long: retrying changes nothing
    ],
)
def test_other_errors_pass_unchanged(error: Exception) -> None:
    with pytest.raises(type(error)) as caught, store_errors():
        raise error
    assert caught.value is error
