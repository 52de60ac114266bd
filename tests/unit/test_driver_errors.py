"""One table turns the driver's errors into domain errors, and says which are retryable."""

from __future__ import annotations

import asyncpg
import pytest

from services.common.db import DatabaseError, DatabaseUnreachableError, driver_errors
from services.common.errors import UnavailableError

E = asyncpg.exceptions


@pytest.mark.parametrize(
    ("raised", "kind", "retryable"),
    [
        (ConnectionRefusedError("refused"), DatabaseUnreachableError, True),
        (TimeoutError(), DatabaseUnreachableError, True),
        (
            E.ConnectionDoesNotExistError("closed in the middle of operation"),
            DatabaseUnreachableError,
            True,
        ),
        (
            asyncpg.InterfaceError("cannot perform operation: connection is closed"),
            DatabaseUnreachableError,
            True,
        ),
        (
            asyncpg.InterfaceError(
                "cannot call Transaction.__aexit__(): the underlying connection is closed"
            ),
            DatabaseUnreachableError,
            True,
        ),
        (
            E.InternalClientError(
                "cannot switch to state 11; another operation (2) is in progress"
            ),
            DatabaseUnreachableError,
            True,
        ),
        (E.AdminShutdownError("terminating connection"), DatabaseUnreachableError, True),
        (
            E.CrashShutdownError("terminating connection: crash of another"),
            DatabaseUnreachableError,
            True,
        ),
        (
            E.CannotConnectNowError("the database system is starting up"),
            DatabaseUnreachableError,
            True,
        ),
        (E.TooManyConnectionsError("too many clients"), DatabaseUnreachableError, True),
        (E.DeadlockDetectedError("deadlock detected"), DatabaseError, True),
        (E.SerializationError("could not serialize access"), DatabaseError, True),
        (E.LockNotAvailableError("could not obtain lock"), DatabaseError, True),
        (E.UndefinedTableError('relation "referrals" does not exist'), DatabaseError, False),
        (E.UniqueViolationError("duplicate key"), DatabaseError, False),
        (asyncpg.InterfaceError("another operation is in progress"), DatabaseError, False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_each_driver_error_becomes_a_database_error_that_says_if_it_is_retryable(
    raised: Exception, kind: type[DatabaseError], retryable: bool
) -> None:
    with pytest.raises(DatabaseError) as caught, driver_errors("insert_referrals"):
        raise raised

    assert type(caught.value) is kind
    assert caught.value.retryable is retryable
    assert isinstance(caught.value, UnavailableError) is (kind is DatabaseUnreachableError)
    assert caught.value.__cause__ is raised
    assert "insert_referrals" in caught.value.message


def test_other_errors_pass_through_untouched() -> None:
    with pytest.raises(KeyError), driver_errors("anything"):
        raise KeyError("not the driver's")
