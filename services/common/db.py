"""The connection pool and the named-query loader every store uses."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import asyncpg

from services.common.errors import HandoffError, UnavailableError

IDLE_IN_TRANSACTION_MS = 60_000
# How long a call waits for a pooled connection before it is answered UNAVAILABLE (the
# pool's TimeoutError is an OSError): with every connection held, waiting longer only
# turns into the client's DEADLINE_EXCEEDED, which says nothing of the cause.
POOL_ACQUIRE_TIMEOUT_S = 10.0
_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)

# Everything the driver raises: the server's errors, the client's, and the socket's.
DRIVER_ERRORS = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)
# The server or the connection is gone, or turns us away for now. A connection that dies
# mid-transaction raises ConnectionDoesNotExistError (a PostgresConnectionError), and
# InterfaceError once it is closed; the next statement tried on it while the driver is
# still unwinding the lost one raises InternalClientError ("cannot switch to state …;
# another operation is in progress"), seen for real when backends are terminated under
# load. OSError covers sockets and timeouts (a pool acquire that times out, too).
_UNREACHABLE = (
    OSError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.InternalClientError,
)
# The statement failed, but the same call may succeed: PostgreSQL rolled the transaction
# back to break a deadlock or a serialization conflict, or a lock was not free.
_RETRYABLE = (
    asyncpg.exceptions.TransactionRollbackError,
    asyncpg.exceptions.LockNotAvailableError,
)


class DatabaseError(HandoffError):
    """The database could not do what was asked (wraps the driver's error).

    `retryable` says whether the same call may succeed later (a deadlock, a serialization
    failure); servicers answer UNAVAILABLE with retry info then, INTERNAL otherwise.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class DatabaseUnreachableError(DatabaseError, UnavailableError):
    """The database cannot be reached, or turns connections away for now."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


def database_error(exc: BaseException, what: str) -> DatabaseError:
    """The domain error for a driver error raised while doing `what`."""
    closed = isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc)
    if closed or isinstance(exc, _UNREACHABLE):
        return DatabaseUnreachableError(f"database unavailable ({what}): {exc}")
    return DatabaseError(f"{what} failed: {exc}", retryable=isinstance(exc, _RETRYABLE))


@contextmanager
def driver_errors(what: str) -> Iterator[None]:
    """Raise the driver's errors inside the block as domain errors (from the original)."""
    try:
        yield
    except DRIVER_ERRORS as exc:
        raise database_error(exc, what) from exc


def load_queries(path: Path) -> dict[str, str]:
    """Read a .sql file of `-- name: x` blocks into {name: sql}."""
    text = path.read_text(encoding="utf-8")
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"{path}: query {name!r} is defined twice")
        queries[name] = body.strip().rstrip(";")
    return queries


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=_json_dumps, decoder=_json_loads, schema="pg_catalog"
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's reset query on release: a round trip per acquire, and our code keeps
    no session state (open transactions are still rolled back before this is called)."""


def _json_dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _json_loads(value: str) -> Any:
    return json.loads(value)


@asynccontextmanager
async def create_pool(
    dsn: str, *, min_size: int = 2, max_size: int = 20
) -> AsyncIterator[asyncpg.Pool]:
    """Open a pool (JSON codecs installed) and close it on exit."""
    with driver_errors("cannot connect to the database"):
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            init=_init_connection,
            reset=_keep_session,
            # A transaction left open by a bug would hold the safe watermark back for every
            # account; PostgreSQL ends any that sits idle this long.
            server_settings={"idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_MS)},
        )
    try:
        yield pool
    finally:
        await pool.close()
