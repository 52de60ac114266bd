"""The only code in export that runs SQL (for now: is the database there, which schema)."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from services.common.db import DatabaseError, load_queries

QUERIES = load_queries(Path(__file__).parent / "sql" / "queries.sql")

# What a pool raises when the server is gone, refuses us or dropped the connection.
_DRIVER_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


class ExportStore:
    """Reads for the export service over one connection pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def ping(self) -> None:
        """Return when the database answers; raise DatabaseError when it does not."""
        try:
            await self._pool.fetchval(QUERIES["ping"])
        except _DRIVER_ERRORS as exc:
            raise DatabaseError(f"the database does not answer: {exc}") from exc

    async def schema_version(self) -> int:
        """The newest migration version applied to the database."""
        try:
            version: int = await self._pool.fetchval(QUERIES["schema_version"])
        except _DRIVER_ERRORS as exc:
            raise DatabaseError(f"cannot read the schema version: {exc}") from exc
        return version
