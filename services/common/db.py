"""The connection pool and the named-query loader every store uses."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg

IDLE_IN_TRANSACTION_MS = 60_000
_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


class DatabaseError(RuntimeError):
    """The database could not do what was asked (wraps the driver's error)."""


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
    try:
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
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseError(f"cannot connect to the database: {exc}") from exc
    try:
        yield pool
    finally:
        await pool.close()
