"""The SQL of the export API's delivery history: an account's deliveries (with their
task's connection) and their attempts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from uuid import UUID

import asyncpg

from services.common.db import driver_errors, load_queries
from services.scheduler.tasks.model import SavedDelivery
from services.scheduler.tasks.store import delivery_of

QUERIES = load_queries(Path(__file__).parent / "sql" / "deliveries.sql")


@dataclass(frozen=True)
class TimeFrameOf:
    """What a redelivery sent: referrals whose `field` time is in [start, end)."""

    field: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class DeliveryRecord:
    """A delivery as its history shows it."""

    delivery: SavedDelivery
    connection_id: UUID
    # Per recorded file: whether it went out OpenPGP-encrypted (None: not recorded, a
    # delivery made before the engine recorded it).
    encrypted: tuple[bool | None, ...]
    frame: TimeFrameOf | None


@dataclass(frozen=True)
class Attempt:
    """One finished attempt of a delivery."""

    attempt: int
    started_at: datetime
    finished_at: datetime
    outcome: str
    error: str | None
    diagnosis: str | None


@dataclass(frozen=True)
class DeliveryFilter:
    """What a listing keeps (None: any)."""

    task_id: UUID | None = None
    connection_id: UUID | None = None
    state: str | None = None
    purpose: str | None = None
    start: datetime | None = None
    end: datetime | None = None


def _record(r: asyncpg.Record) -> DeliveryRecord:
    flags = tuple(
        None if f.get("encrypted") is None else bool(f["encrypted"]) for f in r["files"] or []
    )
    frame = None
    if r["frame_field"] is not None:
        frame = TimeFrameOf(r["frame_field"], r["frame_from"], r["frame_to"])
    return DeliveryRecord(delivery_of(r), r["connection_id"], flags, frame)


def _attempt(r: asyncpg.Record) -> Attempt:
    return Attempt(
        r["attempt"], r["started_at"], r["finished_at"], r["outcome"], r["error"],
        r["diagnosis"],
    )  # fmt: skip


class DeliveryHistoryPg:
    """Reads an account's deliveries."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def page(
        self,
        account_id: UUID,
        wanted: DeliveryFilter,
        before: tuple[datetime, UUID] | None,
        limit: int,
    ) -> list[DeliveryRecord]:
        """The account's deliveries, newest first, after the position `before`."""
        at, last = before if before is not None else (None, None)
        with driver_errors("page_deliveries"):
            rows = await self._pool.fetch(
                QUERIES["page_deliveries"], account_id, wanted.task_id, wanted.connection_id,
                wanted.state, wanted.purpose, wanted.start, wanted.end, at, last, limit,
            )  # fmt: skip
        return [_record(r) for r in rows]

    async def get(self, account_id: UUID, delivery_id: UUID) -> DeliveryRecord | None:
        """The account's delivery, or None (also for another account's)."""
        with driver_errors("get_delivery"):
            row = await self._pool.fetchrow(QUERIES["get_delivery"], account_id, delivery_id)
        return None if row is None else _record(row)

    async def attempts(self, delivery_id: UUID) -> list[Attempt]:
        """The delivery's finished attempts, first to last."""
        with driver_errors("delivery_attempts"):
            rows = await self._pool.fetch(QUERIES["delivery_attempts"], delivery_id)
        return [_attempt(r) for r in rows]
