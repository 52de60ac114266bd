"""The SQL of custom audiences: create, read, delete, and an upload's all-or-nothing
import (COPY into a per-connection staging table, then one merge transaction)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path
from uuid import UUID

import asyncpg

from services.common.audiences.model import MIN_INCLUDE_PEOPLE, Audience, ImportCounts
from services.common.db import DRIVER_ERRORS, POOL_ACQUIRE_TIMEOUT_S, driver_errors, load_queries

QUERIES = load_queries(Path(__file__).parent / "sql" / "audiences.sql")
STAGING_COLUMNS = ("line", "sha256", "md5")
StagedRow = tuple[int, bytes | None, bytes | None]  # (line, sha256, md5)


def _audience(r: asyncpg.Record) -> Audience:
    return Audience(
        id=r["id"], account_id=r["account_id"], name=r["name"], kind=r["kind"],
        source=r["source"], member_count=r["member_count"], sha256_count=r["sha256_count"],
        md5_count=r["md5_count"], state=r["state"], last_import_at=r["last_import_at"],
        created_at=r["created_at"], updated_at=r["updated_at"],
    )  # fmt: skip


class AudienceStorePg:
    """Audiences and their members in PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool, *, minimum: int = MIN_INCLUDE_PEOPLE) -> None:
        self._pool = pool
        self._minimum = minimum

    async def create(
        self, audience_id: UUID, account_id: UUID, name: str, kind: str
    ) -> Audience | None:
        """A new empty audience, or None when the account has one of that name."""
        with driver_errors("create_audience"):
            row = await self._pool.fetchrow(
                QUERIES["create_audience"], audience_id, account_id, name, kind
            )
        return None if row is None else _audience(row)

    async def get(self, account_id: UUID, audience_id: UUID) -> Audience | None:
        """The account's audience, or None (also for another account's)."""
        with driver_errors("get_audience"):
            row = await self._pool.fetchrow(QUERIES["get_audience"], account_id, audience_id)
        return None if row is None else _audience(row)

    async def page(
        self, account_id: UUID, before: tuple[datetime, UUID] | None, limit: int
    ) -> Sequence[Audience]:
        """The account's audiences, newest first, after the position `before`."""
        at, last = before if before is not None else (None, None)
        with driver_errors("page_audiences"):
            rows = await self._pool.fetch(QUERIES["page_audiences"], account_id, at, last, limit)
        return [_audience(r) for r in rows]

    async def delete(self, account_id: UUID, audience_id: UUID) -> list[str] | None:
        """Delete the audience and its members unless a task or connection names it: None
        when the account has no such audience, [] when deleted, else who names it (up to
        20, and nothing was deleted)."""
        with driver_errors("delete_audience"):
            r = await self._pool.fetchrow(QUERIES["delete_audience"], account_id, audience_id)
        assert r is not None
        if r["deleted"]:
            return []
        if not r["found"]:
            return None
        return list(r["users"])

    async def import_members(
        self,
        account_id: UUID,
        audience_id: UUID,
        batches: AsyncIterator[list[StagedRow]],
        *,
        replace: bool,
    ) -> tuple[Audience, ImportCounts] | None:
        """Stage every batch, then merge them in one transaction (replace: members the
        upload does not hold are removed). Nothing changes unless `batches` ends
        normally: an error or a cancellation while staging leaves the audience as it was.
        None when the account has no such audience.

        Staging runs outside a transaction on purpose: a transaction held open while a
        client sends its file would hold the safe referral watermark back for as long."""
        with driver_errors("import audience members"):
            async with self._pool.acquire(timeout=POOL_ACQUIRE_TIMEOUT_S) as conn:
                await conn.execute(QUERIES["create_audience_staging"])
                await conn.execute(QUERIES["empty_audience_staging"])
                try:
                    return await self._stage_and_merge(
                        conn, account_id, audience_id, batches, replace
                    )
                finally:
                    # A connection broken mid-COPY is closed by the pool anyway.
                    with contextlib.suppress(*DRIVER_ERRORS):
                        await conn.execute(QUERIES["empty_audience_staging"])

    async def _stage_and_merge(
        self,
        conn: asyncpg.Connection,
        account_id: UUID,
        audience_id: UUID,
        batches: AsyncIterator[list[StagedRow]],
        replace: bool,
    ) -> tuple[Audience, ImportCounts] | None:
        async for batch in batches:
            await conn.copy_records_to_table(
                "audience_staging", records=batch, columns=STAGING_COLUMNS
            )
        counted = await conn.fetchrow(QUERIES["count_staged_members"])
        counts = ImportCounts(valid=counted["valid"], people=counted["people"])
        async with conn.transaction():
            if await conn.fetchval(QUERIES["lock_audience"], account_id, audience_id) is None:
                return None
            if replace:
                await conn.execute(QUERIES["remove_absent_sha256"], audience_id)
                await conn.execute(QUERIES["remove_absent_md5"], audience_id)
            await conn.execute(QUERIES["insert_staged_members"], audience_id)
            row = await conn.fetchrow(QUERIES["finish_import"], audience_id, self._minimum)
        return _audience(row), counts
