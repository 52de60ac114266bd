"""The SQL of custom audiences: create, read, delete, an all-or-nothing import (COPY into
a per-connection staging table, then one merge transaction) for uploads and pulls alike,
and the leases under which scheduler replicas pull sources (`PullStorePg`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg

from services.common.audiences.bloom import BloomFilter
from services.common.audiences.model import MIN_INCLUDE_PEOPLE, Audience, ImportCounts
from services.common.audiences.sources import (
    PULLED,
    AudienceSource,
    PullOutcome,
    SourceSpec,
    settings_from_json,
)
from services.common.audiences.staging import StagedRow
from services.common.db import DRIVER_ERRORS, POOL_ACQUIRE_TIMEOUT_S, driver_errors, load_queries

QUERIES = load_queries(Path(__file__).parent / "sql" / "audiences.sql")
STAGING_COLUMNS = ("line", "sha256", "md5")


def audience_source(r: asyncpg.Record) -> AudienceSource:
    """A source row as a value."""
    return AudienceSource(
        audience_id=r["audience_id"], account_id=r["account_id"], kind=r["kind"],
        connection_id=r["connection_id"], settings=settings_from_json(r["kind"], r["settings"]),
        interval_s=r["interval_s"], next_due_at=r["next_due_at"], lease_until=r["lease_until"],
        last_started_at=r["last_started_at"], last_finished_at=r["last_finished_at"],
        last_outcome=r["last_outcome"], failures=r["failures"],
    )  # fmt: skip


def _audience(r: asyncpg.Record) -> Audience:
    return Audience(
        id=r["id"], account_id=r["account_id"], name=r["name"], kind=r["kind"],
        source=r["source"], member_count=r["member_count"], sha256_count=r["sha256_count"],
        md5_count=r["md5_count"], state=r["state"], last_import_at=r["last_import_at"],
        created_at=r["created_at"], updated_at=r["updated_at"], md5_only=r["md5_only"],
    )  # fmt: skip


class AudienceStorePg:
    """Audiences and their members in PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool, *, minimum: int = MIN_INCLUDE_PEOPLE) -> None:
        self._pool = pool
        self._minimum = minimum

    async def create(
        self,
        audience_id: UUID,
        account_id: UUID,
        name: str,
        kind: str,
        *,
        source: str = "upload",
        pulled: SourceSpec | None = None,
    ) -> Audience | None:
        """A new empty audience filled by `source` (`pulled`: the settings of a pulled
        one, whose first pull is due at once), or None when the account has one of that
        name. The caller has checked `pulled.connection_id` (see `connection_kind`)."""
        source = pulled.kind if pulled is not None else source
        with driver_errors("create_audience"):
            async with (
                self._pool.acquire(timeout=POOL_ACQUIRE_TIMEOUT_S) as conn,
                conn.transaction(),
            ):
                row = await conn.fetchrow(
                    QUERIES["create_audience"], audience_id, account_id, name, kind, source
                )
                if row is None or pulled is None:
                    return None if row is None else _audience(row)
                await conn.execute(
                    QUERIES["insert_source"], audience_id, account_id, pulled.kind,
                    pulled.connection_id, pulled.settings.to_json(), pulled.interval_s,
                )  # fmt: skip
        return (await self.with_sources(account_id, [_audience(row)]))[0]

    async def connection_kind(self, account_id: UUID, connection_id: UUID) -> str | None:
        """The kind of the account's connection, or None (also for another account's)."""
        with driver_errors("connection_kind"):
            found: str | None = await self._pool.fetchval(
                QUERIES["connection_kind"], account_id, connection_id
            )
        return found

    async def get(self, account_id: UUID, audience_id: UUID) -> Audience | None:
        """The account's audience (with its source when pulled), or None (also for
        another account's)."""
        with driver_errors("get_audience"):
            row = await self._pool.fetchrow(QUERIES["get_audience"], account_id, audience_id)
        if row is None:
            return None
        return (await self.with_sources(account_id, [_audience(row)]))[0]

    async def page(
        self, account_id: UUID, before: tuple[datetime, UUID] | None, limit: int
    ) -> Sequence[Audience]:
        """The account's audiences, newest first, after the position `before`."""
        at, last = before if before is not None else (None, None)
        with driver_errors("page_audiences"):
            rows = await self._pool.fetch(QUERIES["page_audiences"], account_id, at, last, limit)
        return await self.with_sources(account_id, [_audience(r) for r in rows])

    async def with_sources(self, account_id: UUID, audiences: list[Audience]) -> list[Audience]:
        """The audiences with their pulled sources attached (one query for them all)."""
        pulled = [a.id for a in audiences if a.source in PULLED]
        if not pulled:
            return audiences
        with driver_errors("get_sources"):
            rows = await self._pool.fetch(QUERIES["get_sources"], account_id, pulled)
        found = {r["audience_id"]: audience_source(r) for r in rows}
        return [replace(a, pulled=found.get(a.id)) for a in audiences]

    async def request_refresh(self, account_id: UUID, audience_id: UUID) -> bool:
        """Make the audience's source due now; False when the account has no pulled
        audience of that id."""
        with driver_errors("request_refresh"):
            row = await self._pool.fetchrow(QUERIES["request_refresh"], account_id, audience_id)
        return row is not None

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
        bloom = BloomFilter()  # of the staged SHA-256 members, as they pass
        async for batch in batches:
            await conn.copy_records_to_table(
                "audience_staging", records=batch, columns=STAGING_COLUMNS
            )
            for _, sha256, _ in batch:
                if sha256 is not None:
                    bloom.add(sha256)
        counted = await conn.fetchrow(QUERIES["count_staged_members"])
        counts = ImportCounts(valid=counted["valid"], people=counted["people"])
        async with conn.transaction():
            if await conn.fetchval(QUERIES["lock_audience"], account_id, audience_id) is None:
                return None
            if replace:
                await conn.execute(QUERIES["remove_absent_sha256"], audience_id)
                await conn.execute(QUERIES["remove_absent_md5"], audience_id)
            await conn.execute(QUERIES["insert_staged_members"], audience_id)
            row = await conn.fetchrow(
                QUERIES["finish_import"], audience_id, self._minimum, replace,
                counted["md5_only"], bloom.to_db(),
            )  # fmt: skip
        return _audience(row), counts


@dataclass(frozen=True)
class SourceConnection:
    """The connection a source reads through, its secrets still sealed."""

    kind: str
    settings: dict[str, Any]
    sealed: dict[str, str] = field(repr=False)


class PullStorePg:
    """Due sources leased to one replica at a time, and their outcomes."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def claim_due(
        self, now: datetime, limit: int, token: UUID, lease_s: float
    ) -> list[AudienceSource]:
        """Lease up to `limit` sources due at `now` that nobody is pulling to `token`."""
        with driver_errors("claim_due_sources"):
            rows = await self._pool.fetch(QUERIES["claim_due_sources"], now, limit, token, lease_s)
        return [audience_source(r) for r in rows]

    async def connection(self, account_id: UUID, connection_id: UUID) -> SourceConnection | None:
        """The account's connection, or None when it no longer exists."""
        with driver_errors("source_connection"):
            row = await self._pool.fetchrow(QUERIES["source_connection"], account_id, connection_id)
        if row is None:
            return None
        return SourceConnection(row["kind"], dict(row["settings"]), dict(row["secrets"]))

    async def renew(self, audience_id: UUID, token: UUID, until: datetime) -> bool:
        """Extend the lease; False when it is no longer the caller's."""
        with driver_errors("renew_source_lease"):
            found = await self._pool.fetchval(
                QUERIES["renew_source_lease"], audience_id, token, until
            )
        return found is not None

    async def finish(
        self, audience_id: UUID, token: UUID, outcome: PullOutcome, next_due: datetime
    ) -> bool:
        """Record the outcome and release the lease; False when it was no longer ours."""
        with driver_errors("finish_pull"):
            found = await self._pool.fetchval(
                QUERIES["finish_pull"], audience_id, token, outcome.finished_at,
                outcome.to_json(), next_due, outcome.ok,
            )  # fmt: skip
        return found is not None
