"""The only code of the delivery service that runs SQL: leases, context, outcomes."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import asyncpg

from services.common.audiences.targets import AudienceSplit
from services.common.db import DatabaseError, driver_errors, load_queries
from services.common.referral_rows import TimeFrame
from services.delivery.transports.base import ItemResult

QUERIES = load_queries(Path(__file__).parent / "sql" / "deliveries.sql")
_T = TypeVar("_T")


@dataclass(frozen=True)
class Claimed:
    """A delivery this process holds the lease of, for one attempt."""

    id: UUID
    task_id: UUID
    account_id: UUID
    purpose: str
    after_seq: int
    through_seq: int
    attempt: int
    layout: dict[str, Any] | None
    reserved_at: datetime
    started_at: datetime
    names_from: UUID  # whose file names it writes (a resend: the original's)
    frame: TimeFrame | None = None  # a redelivery: only this time frame


@dataclass(frozen=True)
class DeliveryContext:
    """The task, connection and account a delivery runs for."""

    task_name: str
    campaign_ids: tuple[UUID, ...] | None
    layout_id: UUID | None
    format: dict[str, Any] | None
    time_zone: str
    connection_id: UUID
    settings: dict[str, Any]
    sealed: dict[str, str]
    account_time_zone: str
    campaign_names: dict[str, str]
    kind: str = "sftp"  # the connection's: which transport delivers
    audience_ids: tuple[UUID, ...] = ()  # the task's custom audiences


def _frame(record: asyncpg.Record) -> TimeFrame | None:
    if record["frame_field"] is None:
        return None
    return TimeFrame(record["frame_from"], record["frame_to"], record["frame_field"])


def _claimed(r: asyncpg.Record) -> Claimed:
    return Claimed(
        r["id"], r["task_id"], r["account_id"], r["purpose"], r["after_seq"],
        r["through_seq"], r["attempts"], r["layout"], r["reserved_at"], r["claimed_at"],
        r["resend_of"] or r["id"], _frame(r),
    )  # fmt: skip


class DeliveryStorePg:
    """Deliveries, as the delivery service sees them."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @property
    def pool(self) -> asyncpg.Pool:
        """The pool (for the shared audience look-up)."""
        return self._pool

    async def _run(self, name: str, call: Callable[[], Awaitable[_T]]) -> _T:
        with driver_errors(name):
            return await call()

    async def _row(self, name: str, *args: Any) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._run(
            name, lambda: self._pool.fetchrow(QUERIES[name], *args)
        )
        return row

    async def described(self, delivery_id: UUID) -> Claimed | None:
        """The delivery as an attempt sees it, without its lease (None: no such delivery)."""
        r = await self._row("described", delivery_id)
        return None if r is None else _claimed(r)

    async def claim(self, delivery_id: UUID, lease_s: float) -> Claimed | None:
        """Take the lease for a new attempt, or None when it is not claimable."""
        r = await self._row("claim", delivery_id, lease_s)
        if r is None:
            return None
        return _claimed(r)

    async def state(self, delivery_id: UUID) -> asyncpg.Record | None:
        """The delivery's state, lease and range (None: no such delivery)."""
        return await self._row("state", delivery_id)

    async def original_files(self, delivery_id: UUID) -> dict[str, str]:
        """File name -> SHA-256 of what a delivery wrote."""
        r = await self._row("original_files", delivery_id)
        files = r["files"] if r is not None else []
        return {str(f["path"]).rsplit("/", 1)[-1]: str(f["sha256"]) for f in files}

    async def heartbeat(self, claimed: Claimed, lease_s: float) -> None:
        """Extend the lease of the attempt in flight."""
        await self._run(
            "heartbeat",
            lambda: self._pool.execute(QUERIES["heartbeat"], claimed.id, claimed.attempt, lease_s),
        )

    async def context(self, task_id: UUID) -> DeliveryContext | None:
        """The task's settings, its connection and account (None: the task is gone)."""
        r = await self._row("context", task_id)
        if r is None:
            return None
        campaigns = r["campaign_ids"]
        return DeliveryContext(
            r["task_name"], None if campaigns is None else tuple(campaigns), r["layout_id"],
            r["format"], r["time_zone"], r["connection_id"], dict(r["settings"]),
            dict(r["secrets"]), r["account_time_zone"], dict(r["campaign_names"]), r["kind"],
            tuple(r["audience_ids"]),
        )  # fmt: skip

    async def layout_definitions(
        self, account_id: UUID, layout_id: UUID | None
    ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """(the layout row or None for the built-in default, custom fields by name)."""
        r = await self._row("layout_definitions", account_id, layout_id)
        assert r is not None
        return r["layout"], dict(r["custom_fields"])

    async def keep_layout(self, claimed: Claimed, snapshot: dict[str, Any]) -> dict[str, Any]:
        """Fix the delivery's layout (the first writer wins); the one kept."""
        r = await self._row("keep_layout", claimed.id, snapshot)
        if r is not None:
            kept: dict[str, Any] = r["layout"]
            return kept
        kept_before = await self._row("kept_layout", claimed.id)
        assert kept_before is not None
        return dict(kept_before["layout"])

    async def suppressions_recorded(self, claimed: Claimed, snapshot: dict[str, Any]) -> bool:
        """Whether the delivery (its layout `snapshot`) has nothing left to record about
        its audiences: none are named, or the delivery whose rows it renders recorded
        what they held back."""
        if not AudienceSplit.from_json(snapshot.get("audiences")):
            return True
        r = await self._row("suppressions_recorded", claimed.names_from)
        return r is not None and bool(r["recorded"])

    async def record_suppressions(self, delivery_id: UUID, seqs: list[int]) -> None:
        """Record which referrals the delivery's audiences held back, as its first render
        found (every later render leaves out these). The first attempt to record wins:
        another that recorded first makes this one fail, to be retried (its rows might
        differ: the audiences may have changed in between)."""

        done = await self._row("record_suppressions", delivery_id, seqs)
        if done is None:
            raise DatabaseError(
                "recording suppressions: another attempt recorded them first", retryable=True
            )

    async def succeed(
        self, claimed: Claimed, rows: int, size: int, files: list[dict[str, Any]]
    ) -> bool:
        """Record success; a scheduled delivery moves its task's cursor, in one transaction."""

        async def record() -> bool:
            async with self._pool.acquire() as conn, conn.transaction():
                done = await conn.fetchrow(
                    QUERIES["succeed"], claimed.id, claimed.attempt, rows, size, files
                )
                if done is None:
                    return False  # the lease was lost to another attempt
                if done["purpose"] == "scheduled":
                    await conn.execute(
                        QUERIES["advance_cursor"], done["task_id"], done["after_seq"],
                        done["through_seq"],
                    )  # fmt: skip
                await conn.execute(
                    QUERIES["record_attempt"], claimed.id, claimed.attempt,
                    claimed.started_at, "succeeded", None, None,
                )  # fmt: skip
                return True

        return await self._run("succeed", record)

    async def retry_later(self, claimed: Claimed, at: datetime, error: str, diagnosis: str) -> None:
        """Record a failed attempt that will be tried again at `at`."""

        async def record() -> None:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    QUERIES["retry_later"], claimed.id, claimed.attempt, at, error, diagnosis
                )
                await conn.execute(
                    QUERIES["record_attempt"], claimed.id, claimed.attempt,
                    claimed.started_at, "retrying", error, diagnosis,
                )  # fmt: skip

        await self._run("retry_later", record)

    async def reset_items(self, claimed: Claimed) -> None:
        """Forget a record delivery's per-referral outcomes before an attempt resends its
        range (each is decided again)."""
        with driver_errors("items_reset"):
            await self._pool.execute(QUERIES["items_reset"], claimed.id)

    async def record_items(self, claimed: Claimed, items: Sequence[tuple[int, ItemResult]]) -> None:
        """Record referrals that were rejected, or are left to the next attempt."""
        with driver_errors("items_record"):
            await self._pool.execute(
                QUERIES["items_record"], claimed.id, claimed.attempt,
                [seq for seq, _ in items], [r.status.value for _, r in items],
                [r.detail[:1000] for _, r in items],
            )  # fmt: skip

    async def items(self, delivery_id: UUID) -> list[tuple[int, str, str]]:
        """(seq, outcome, detail) of a record delivery's referrals not simply accepted."""
        with driver_errors("items_of"):
            rows = await self._pool.fetch(QUERIES["items_of"], delivery_id)
        return [(r["seq"], r["outcome"], r["detail"]) for r in rows]

    async def give_up(self, claimed: Claimed, error: str, diagnosis: str, attention: str) -> None:
        """Mark the delivery dead and tell the account: its task needs attention."""

        async def record() -> None:
            async with self._pool.acquire() as conn, conn.transaction():
                dead = await conn.fetchrow(
                    QUERIES["give_up"], claimed.id, claimed.attempt, error, diagnosis
                )
                if dead is None:
                    return
                await conn.execute(
                    QUERIES["record_attempt"], claimed.id, claimed.attempt,
                    claimed.started_at, "dead", error, diagnosis,
                )  # fmt: skip
                if dead["purpose"] == "scheduled":
                    await conn.execute(QUERIES["needs_attention"], dead["task_id"], attention)
                await conn.execute(
                    QUERIES["attention_event"], uuid.uuid4(), dead["account_id"],
                    dead["task_id"], claimed.id, diagnosis, attention,
                )  # fmt: skip

        await self._run("give_up", record)
