"""The only code of the live (real-time) path that runs SQL."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg

from services.common.db import driver_errors, load_queries
from services.common.layouts.codec import layout_from_json
from services.common.layouts.compiler import RenderContext
from services.common.layouts.defaults import DEFAULT_LAYOUT
from services.common.layouts.model import LayoutSpec
from services.common.referral_rows import ReferralRowReader

QUERIES = load_queries(Path(__file__).parent.parent / "sql" / "live.sql")
ATTEMPT_COLUMNS = (
    "attempted_at",
    "connection_id",
    "account_id",
    "seq",
    "attempt",
    "status",
    "latency_ms",
    "outcome",
    "rule",
    "response_head",
    "error",
)


@dataclass(frozen=True)
class LiveConnection:
    """What a live loop runs from."""

    id: UUID
    account_id: UUID
    kind: str  # which record sender runs it
    name: str
    settings: dict[str, Any]
    sealed: dict[str, str]
    version: int
    delivered_seq: int | None
    starts_at: datetime  # referrals received from then on are the connection's
    disabled_at: datetime | None
    audience_ids: tuple[UUID, ...] = ()  # custom audiences that target it


@dataclass(frozen=True)
class Parked:
    """A referral's new waiting row: retrying, dead or rejected."""

    seq: int
    state: str
    attempts: int
    next_at: datetime | None
    first_failed_at: datetime | None
    last_at: datetime
    status: int | None
    error: str


@dataclass
class Flush:
    """One transaction's worth of outcomes."""

    attempts: list[tuple[Any, ...]] = field(default_factory=list)
    parked: list[Parked] = field(default_factory=list)
    done: list[int] = field(default_factory=list)
    cursor: int | None = None
    success_at: datetime | None = None
    failure_at: datetime | None = None
    suppressed: int = 0  # referrals the audiences held back (passed without a call)


class LostLeaseError(Exception):
    """Another replica owns the loop now: this one stops without writing."""


class LiveStorePg:
    """Leases, cursors, waiting referrals and attempts in PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def claim(
        self, owner: str, lease_s: float, limit: int, kinds: Sequence[str] = ("api",)
    ) -> dict[UUID, int]:
        """The connections of `kinds` this replica runs now (new ones taken, ours
        renewed), with the version of their settings."""
        with driver_errors("live_claim"):
            rows = await self._pool.fetch(QUERIES["live_claim"], owner, lease_s, limit, list(kinds))
        return {r["connection_id"]: r["version"] for r in rows}

    async def release(self, owner: str) -> None:
        """Give up every lease of `owner`."""
        with driver_errors("live_release"):
            await self._pool.execute(QUERIES["live_release"], owner)

    async def connection(self, connection_id: UUID) -> LiveConnection | None:
        """The connection and its cursor (None once deleted)."""
        with driver_errors("live_connection"):
            r = await self._pool.fetchrow(QUERIES["live_connection"], connection_id)
        if r is None:
            return None
        return LiveConnection(
            connection_id,
            r["account_id"],
            r["kind"],
            r["name"],
            dict(r["settings"]),
            dict(r["secrets"]),
            r["version"],
            r["delivered_seq"],
            r["starts_at"],
            r["disabled_at"],
            tuple(r["audience_ids"]),
        )

    @property
    def pool(self) -> asyncpg.Pool:
        """The pool (for the shared audience checks)."""
        return self._pool

    async def custom_fields(self, account_id: UUID) -> list[tuple[str, str, Any]]:
        """(name, description, definition) of the account's custom fields."""
        with driver_errors("live_custom_fields"):
            rows = await self._pool.fetch(QUERIES["live_custom_fields"], account_id)
        return [(r["name"], r["description"], r["definition"]) for r in rows]

    async def layout(self, account_id: UUID, layout_id: str | None) -> LayoutSpec | None:
        """The layout a vendor connection maps: the saved one it names (`layout_id`), or
        with none named the account's saved default, else the built-in default; None
        when the named layout is gone."""
        wanted = UUID(layout_id) if layout_id else None
        with driver_errors("live_layout"):
            r = await self._pool.fetchrow(QUERIES["live_layout"], account_id, wanted)
        if r is None:
            return None if wanted is not None else DEFAULT_LAYOUT
        return layout_from_json(dict(r["definition"]))

    async def render_context(self, account_id: UUID) -> RenderContext:
        """The account's zone and campaign names (what context fields render from)."""
        return await ReferralRowReader(self._pool).render_context(account_id) or RenderContext()

    async def watermark(self) -> int:
        """The safe watermark now."""
        with driver_errors("live_watermark"):
            value: int = await self._pool.fetchval(QUERIES["live_watermark"])
        return value

    async def place_cursor(self, connection_id: UUID, owner: str, watermark: int) -> int | None:
        """Place a new connection's cursor; None if it was placed already."""
        with driver_errors("live_place_cursor"):
            value: int | None = await self._pool.fetchval(
                QUERIES["live_place_cursor"], connection_id, owner, watermark
            )
        return value

    async def rows(
        self,
        account_id: UUID,
        after: int,
        through: int,
        campaigns: Sequence[UUID] | None,
        limit: int,
        received_from: datetime,
    ) -> list[asyncpg.Record]:
        """The next referrals in scope, as text rows in ROW_FIELDS order."""
        with driver_errors("live_rows"):
            found: list[asyncpg.Record] = await self._pool.fetch(
                QUERIES["live_rows"], account_id, after, through, campaigns, limit,
                received_from,
            )  # fmt: skip
        return found

    async def rows_by_seq(self, account_id: UUID, seqs: Sequence[int]) -> list[asyncpg.Record]:
        """These referrals, as text rows."""
        with driver_errors("live_rows_by_seq"):
            found: list[asyncpg.Record] = await self._pool.fetch(
                QUERIES["live_rows_by_seq"], account_id, list(seqs)
            )
        return found

    async def due(self, connection_id: UUID, now: datetime, limit: int) -> list[asyncpg.Record]:
        """Waiting referrals due by `now`."""
        with driver_errors("live_due"):
            found: list[asyncpg.Record] = await self._pool.fetch(
                QUERIES["live_due"], connection_id, now, limit
            )
        return found

    async def accounts_between(self, after: int, through: int) -> set[UUID]:
        """The accounts with referrals in (after, through]."""
        with driver_errors("live_accounts_between"):
            rows = await self._pool.fetch(QUERIES["live_accounts_between"], after, through)
        return {r["account_id"] for r in rows}

    async def next_due(self, connection_id: UUID, now: datetime) -> tuple[datetime | None, int]:
        """When the next waiting referral is due after `now`, and how many wait."""
        with driver_errors("live_next_due"):
            r = await self._pool.fetchrow(QUERIES["live_next_due"], connection_id, now)
        assert r is not None
        return r["next_at"], r["waiting"]

    async def flush(
        self, connection_id: UUID, account_id: UUID, owner: str, batch: Flush
    ) -> datetime | None:
        """Write a batch of outcomes in one transaction, if the lease is still ours; the
        endpoint's failing-since time after it. LostLeaseError otherwise."""
        with driver_errors("live_flush"):
            async with self._pool.acquire() as conn, conn.transaction():
                advanced = await conn.fetchrow(
                    QUERIES["live_advance"],
                    connection_id,
                    owner,
                    batch.cursor if batch.cursor is not None else -1,
                    batch.success_at,
                    batch.failure_at,
                    batch.suppressed,
                )
                if advanced is None:
                    raise LostLeaseError(str(connection_id))
                if batch.attempts:
                    await conn.copy_records_to_table(
                        "live_attempts", records=batch.attempts, columns=ATTEMPT_COLUMNS
                    )
                if batch.parked:
                    p = batch.parked
                    await conn.execute(
                        QUERIES["live_park"],
                        connection_id,
                        account_id,
                        [x.seq for x in p],
                        [x.state for x in p],
                        [x.attempts for x in p],
                        [x.next_at for x in p],
                        [x.first_failed_at for x in p],
                        [x.last_at for x in p],
                        [x.status for x in p],
                        [x.error for x in p],
                    )
                if batch.done:
                    await conn.execute(QUERIES["live_done"], connection_id, batch.done)
                failing: datetime | None = advanced["failing_since"]
                return failing

    async def disable(self, connection_id: UUID, at: datetime, reason: str, diagnosis: str) -> bool:
        """Disable the endpoint and tell the account (once); False if it was already."""
        with driver_errors("live_disable"):
            async with self._pool.acquire() as conn, conn.transaction():
                account = await conn.fetchval(QUERIES["live_disable"], connection_id, at, reason)
                if account is None:
                    return False
                await conn.execute(
                    QUERIES["live_attention"],
                    uuid.uuid4(),
                    account,
                    connection_id,
                    diagnosis,
                    reason,
                )
                return True

    async def endpoint_gone(self, connection_id: UUID, at: datetime, reason: str) -> bool:
        """The endpoint answered 410: remove the Zapier subscription that owns the
        connection (and with it the connection); False when none does."""
        with driver_errors("live_endpoint_gone"):
            removed = await self._pool.fetchval(
                QUERIES["live_endpoint_gone"], connection_id, at, reason
            )
        return removed is not None

    async def maintain(self, retention_days: int, days_ahead: int = 3) -> int | None:
        """Keep the attempt log's daily partitions: made ahead, counted and dropped past the
        retention. None when another replica is doing it."""
        with driver_errors("live_maintain"):
            dropped: int | None = await self._pool.fetchval(
                QUERIES["live_maintain"], retention_days, days_ahead
            )
        return dropped

    async def hold_for(self, connection_id: UUID, until: datetime) -> None:
        """No waiting referral is tried before `until`."""
        with driver_errors("live_hold_for"):
            await self._pool.execute(QUERIES["live_hold_for"], connection_id, until)
