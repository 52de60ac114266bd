"""The only code in export that runs SQL (for now: is the database there, which schema)."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import asyncpg

from services.common.db import driver_errors, load_queries

QUERIES = load_queries(Path(__file__).parent / "sql" / "queries.sql")


class ExportStore:
    """Reads for the export service over one connection pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def ping(self) -> None:
        """Return when the database answers; raise DatabaseError when it does not."""
        with driver_errors("ping"):
            await self._pool.fetchval(QUERIES["ping"])

    async def schema_version(self) -> int:
        """The newest migration version applied to the database."""
        with driver_errors("schema_version"):
            version: int = await self._pool.fetchval(QUERIES["schema_version"])
        return version

    async def confirm_recipient(self, recipient_id: UUID) -> tuple[str, str, bool] | None:
        """Approve a pending recipient by its link: (address, state now, whether this click
        changed it), or None when it no longer exists."""
        with driver_errors("confirm_recipient"):
            r = await self._pool.fetchrow(QUERIES["confirm_recipient"], recipient_id)
        return None if r is None else (r["address"], r["state"], r["changed"])

    async def delivery_account(self, delivery_id: UUID) -> UUID | None:
        """The account of a delivery, or None when it is gone."""
        with driver_errors("delivery_account"):
            found: UUID | None = await self._pool.fetchval(QUERIES["delivery_account"], delivery_id)
        return found
