"""The only code that runs SQL about tasks, their deliveries and attention (scheduler side)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import asyncpg

from services.common.audiences.targets import Targeting, look_up
from services.common.db import DatabaseError, driver_errors, load_queries
from services.scheduler.tasks.model import (
    AttentionEvent,
    DeliveredFile,
    SavedDelivery,
    SavedTask,
    TaskSpec,
)
from services.scheduler.tasks.schedules import Schedule

QUERIES = load_queries(Path(__file__).parent / "sql" / "tasks.sql")
_T = TypeVar("_T")


def task_of(record: asyncpg.Record) -> SavedTask:
    """A task row as a value."""
    campaigns = record["campaign_ids"]
    spec = TaskSpec(
        name=record["name"],
        connection_id=record["connection_id"],
        campaign_ids=None if campaigns is None else tuple(campaigns),
        layout_id=record["layout_id"],
        format=record["format"],
        schedule=Schedule.from_json(record["schedule"]),
        time_zone=record["time_zone"],
        enabled=record["enabled"],
        send_empty=record["send_empty"],
        audience_ids=tuple(record["audience_ids"]),
    )
    return SavedTask(
        id=record["id"],
        account_id=record["account_id"],
        spec=spec,
        delivered_seq=record["delivered_seq"],
        next_run_at=record["next_run_at"],
        attention=record["attention"],
        version=record["version"],
        created_at=record["created_at"],
        updated_at=record["updated_at"],
    )


def delivery_of(record: asyncpg.Record) -> SavedDelivery:
    """A delivery row as a value."""
    files = record["files"] or []
    return SavedDelivery(
        id=record["id"], task_id=record["task_id"], account_id=record["account_id"],
        purpose=record["purpose"], after_seq=record["after_seq"],
        through_seq=record["through_seq"], state=record["state"], layout=record["layout"],
        reserved_at=record["reserved_at"], attempts=record["attempts"],
        lease_until=record["lease_until"], next_attempt_at=record["next_attempt_at"],
        rows=record["rows_sent"], bytes=record["bytes_sent"],
        files=tuple(DeliveredFile(f["path"], f["rows"], f["bytes"], f["sha256"]) for f in files),
        error=record["error"], diagnosis=record["diagnosis"],
        finished_at=record["finished_at"], resend_of=record["resend_of"],
        suppressed=record["suppressed"],
    )  # fmt: skip


def _spec_args(spec: TaskSpec) -> tuple[Any, ...]:
    campaigns = None if spec.campaign_ids is None else list(spec.campaign_ids)
    return (
        spec.connection_id, spec.name, campaigns, spec.layout_id, spec.format,
        spec.schedule.to_json(), spec.time_zone, spec.enabled, spec.send_empty,
        list(spec.audience_ids),
    )  # fmt: skip


class TaskStorePg:
    """Tasks and deliveries in PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def _run(self, name: str, call: Callable[[], Awaitable[_T]]) -> _T:
        with driver_errors(name):
            return await call()

    async def _rows(self, name: str, *args: Any) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._run(
            name, lambda: self._pool.fetch(QUERIES[name], *args)
        )
        return rows

    async def _value(self, name: str, *args: Any) -> Any:
        return await self._run(name, lambda: self._pool.fetchval(QUERIES[name], *args))

    async def account_state(self, account_id: UUID) -> tuple[bool, str] | None:
        """(archived, time zone) of the account, or None."""
        rows = await self._rows("account_state", account_id)
        return (bool(rows[0]["archived"]), rows[0]["time_zone"]) if rows else None

    async def foreign_campaigns(self, account_id: UUID, ids: list[UUID]) -> list[UUID]:
        """Which of `ids` are not this account's campaigns."""
        return [r["c"] for r in await self._rows("foreign_campaigns", account_id, ids)]

    async def layout_exists(self, account_id: UUID, layout_id: UUID) -> bool:
        """Whether the account has that layout."""
        return bool(await self._value("layout_exists", account_id, layout_id))

    async def audience_targeting(self, account_id: UUID, ids: list[UUID]) -> Targeting:
        """The named audiences of the account, checked (services/common/audiences/targets.py)."""
        return await look_up(self._pool, account_id, ids, "task.audience_ids")

    async def connection_exists(self, account_id: UUID, connection_id: UUID) -> bool:
        """Whether the account has that connection."""
        return bool(await self._value("connection_exists", account_id, connection_id))

    async def insert_task(
        self,
        task_id: UUID,
        account_id: UUID,
        spec: TaskSpec,
        backfill_from: datetime | None,
        next_run_at: datetime,
    ) -> SavedTask | None:
        """Store a new task whose cursor is the safe watermark now (or the backfill's)."""

        async def insert() -> asyncpg.Record | None:
            async with self._pool.acquire() as conn, conn.transaction():
                watermark = await conn.fetchval(QUERIES["safe_watermark"])
                cursor = watermark
                if backfill_from is not None:
                    found = await conn.fetchval(
                        QUERIES["backfill_cursor"], account_id, backfill_from, watermark
                    )
                    cursor = min(found, watermark)
                record: asyncpg.Record | None = await conn.fetchrow(
                    QUERIES["insert_task"], task_id, account_id, *_spec_args(spec),
                    cursor, next_run_at,
                )  # fmt: skip
                return record

        record = await self._run("insert_task", insert)
        return task_of(record) if record is not None else None

    async def get_task(self, account_id: UUID, task_id: UUID) -> SavedTask | None:
        """The account's task, or None."""
        rows = await self._rows("get_task", account_id, task_id)
        return task_of(rows[0]) if rows else None

    async def page_tasks(self, account_id: UUID, after: str, limit: int) -> list[SavedTask]:
        """Tasks by name after `after`."""
        return [task_of(r) for r in await self._rows("page_tasks", account_id, after, limit)]

    async def update_task(
        self, account_id: UUID, task_id: UUID, spec: TaskSpec, next_run_at: datetime
    ) -> SavedTask | None:
        """Replace the settings, clear attention, and revive a dead delivery."""

        async def update() -> asyncpg.Record | None:
            async with self._pool.acquire() as conn, conn.transaction():
                record: asyncpg.Record | None = await conn.fetchrow(
                    QUERIES["update_task"], account_id, task_id, *_spec_args(spec), next_run_at
                )
                if record is not None:
                    await conn.execute(QUERIES["revive_dead"], task_id)
                    await conn.execute(QUERIES["resolve_attention"], task_id)
                return record

        try:
            record = await self._run("update_task", update)
        except DatabaseError as exc:
            if isinstance(exc.__cause__, asyncpg.UniqueViolationError):
                return None
            raise
        return task_of(record) if record is not None else None

    async def delete_task(self, account_id: UUID, task_id: UUID) -> bool:
        """Delete a task (and its history); whether it existed."""
        status: str = await self._run(
            "delete_task", lambda: self._pool.execute(QUERIES["delete_task"], account_id, task_id)
        )
        return status.endswith(" 1")

    async def set_enabled(self, account_id: UUID, task_id: UUID, enabled: bool) -> SavedTask | None:
        """Pause, or resume (clearing attention and reviving a dead delivery)."""

        async def change() -> asyncpg.Record | None:
            async with self._pool.acquire() as conn, conn.transaction():
                record: asyncpg.Record | None = await conn.fetchrow(
                    QUERIES["set_enabled"], account_id, task_id, enabled
                )
                if record is not None and enabled:
                    await conn.execute(QUERIES["revive_dead"], task_id)
                    await conn.execute(QUERIES["resolve_attention"], task_id)
                return record

        record = await self._run("set_enabled", change)
        return task_of(record) if record is not None else None

    async def run_now(self, account_id: UUID, task_id: UUID) -> SavedTask | None:
        """Make the task due now."""
        rows = await self._rows("run_now", account_id, task_id)
        return task_of(rows[0]) if rows else None

    async def open_delivery(self, task_id: UUID) -> bool:
        """Whether the task has an open scheduled delivery."""
        return bool(await self._value("open_delivery", task_id))

    async def safe_watermark(self) -> int:
        """The safe watermark now."""
        value: int = await self._value("safe_watermark")
        return value

    async def count_in_range(
        self, account_id: UUID, after: int, through: int, campaigns: tuple[UUID, ...] | None
    ) -> int:
        """Referrals of the scope in (after, through]."""
        wanted = None if campaigns is None else list(campaigns)
        count: int = await self._value("count_in_range", account_id, after, through, wanted)
        return count

    async def delivery_lags(self) -> list[tuple[UUID, UUID, float]]:
        """(task, account, seconds its oldest undelivered referral has waited) per enabled task."""
        rows = await self._rows("delivery_lags")
        return [(r["id"], r["account_id"], float(r["lag_s"])) for r in rows]

    @asynccontextmanager
    async def reservation(self) -> AsyncIterator[ReservationTransaction]:
        """One transaction that reads the watermark first, then locks due tasks."""
        with driver_errors("reservation"):
            async with self._pool.acquire() as conn, conn.transaction():
                watermark = await conn.fetchval(QUERIES["safe_watermark"])
                yield ReservationTransaction(conn, watermark)

    async def jobs_to_issue(
        self, now: datetime, push_back_to: datetime, limit: int
    ) -> list[tuple[UUID, int, int]]:
        """(delivery id, after, through) of deliveries to hand to the delivery service."""
        rows = await self._rows("jobs_to_issue", now, push_back_to, limit)
        return [(r["id"], r["after_seq"], r["through_seq"]) for r in rows]

    async def page_deliveries(
        self, account_id: UUID, task_id: UUID, before: tuple[datetime, UUID] | None, limit: int
    ) -> list[SavedDelivery]:
        """The task's deliveries, newest first, before `before`."""
        at, last = before if before is not None else (None, None)
        rows = await self._rows("page_deliveries", account_id, task_id, at, last, limit)
        return [delivery_of(r) for r in rows]

    async def get_delivery(self, account_id: UUID, delivery_id: UUID) -> SavedDelivery | None:
        """The account's delivery, or None."""
        rows = await self._rows("get_delivery", account_id, delivery_id)
        return delivery_of(rows[0]) if rows else None

    async def task_encrypts(self, task_id: UUID) -> bool:
        """Whether the task's connection encrypts files (so no resend repeats the bytes)."""
        return bool(await self._value("task_encrypts", task_id))

    async def insert_resend(self, original: SavedDelivery, resend_id: UUID) -> SavedDelivery:
        """A resend of `original`: its range, layout and reserved time (so its names)."""
        rows = await self._rows(
            "insert_delivery", resend_id, original.task_id, original.account_id, "resend",
            original.after_seq, original.through_seq, original.layout, original.reserved_at,
            original.id,
        )  # fmt: skip
        return delivery_of(rows[0])

    async def insert_redelivery(
        self, task: SavedTask, redelivery_id: UUID, field: str, start: datetime, end: datetime
    ) -> SavedDelivery:
        """A redelivery of a time frame, over everything committed up to now."""

        async def insert() -> asyncpg.Record:
            async with self._pool.acquire() as conn, conn.transaction():
                watermark = await conn.fetchval(QUERIES["safe_watermark"])
                record: asyncpg.Record = await conn.fetchrow(
                    QUERIES["insert_redelivery"], redelivery_id, task.id, task.account_id,
                    watermark, field, start, end,
                )  # fmt: skip
                return record

        return delivery_of(await self._run("insert_redelivery", insert))

    async def attention_events(
        self, account_id: UUID, include_resolved: bool
    ) -> list[AttentionEvent]:
        """The account's attention events, newest first."""
        rows = await self._rows("attention_events", account_id, include_resolved)
        return [
            AttentionEvent(
                r["id"],
                r["task_id"],
                r["delivery_id"],
                r["diagnosis"],
                r["message"],
                r["created_at"],
                r["resolved_at"],
                r["connection_id"],
            )
            for r in rows
        ]


class ReservationTransaction:
    """Inside `TaskStorePg.reservation()`: lock due tasks, reserve deliveries."""

    def __init__(self, conn: asyncpg.Connection, watermark: int) -> None:
        self._conn = conn
        self.watermark = watermark

    async def due_tasks(self, now: datetime, limit: int) -> list[tuple[SavedTask, bool]]:
        """Due tasks, locked, each with whether it has an open delivery."""
        rows = await self._conn.fetch(QUERIES["due_tasks"], now, limit)
        return [(task_of(r), bool(r["has_open"])) for r in rows]

    async def reserve(
        self, delivery_id: UUID, task: SavedTask, through_seq: int, reserved_at: datetime
    ) -> None:
        """A scheduled delivery of `task` over (its cursor, through_seq]."""
        await self._conn.execute(
            QUERIES["insert_delivery"], delivery_id, task.id, task.account_id, "scheduled",
            task.delivered_seq, through_seq, None, reserved_at, None,
        )  # fmt: skip

    async def has_news(self, task: SavedTask, through_seq: int) -> bool:
        """Whether the task's scope has referrals in (its cursor, through_seq]."""
        campaigns = None if task.spec.campaign_ids is None else list(task.spec.campaign_ids)
        news: bool = await self._conn.fetchval(
            QUERIES["has_news"], task.account_id, task.delivered_seq, through_seq, campaigns
        )
        return news

    async def skip_empty(self, task_id: UUID, through_seq: int) -> None:
        """Move the cursor over a range with nothing of the task's scope."""
        await self._conn.execute(QUERIES["skip_empty"], task_id, through_seq)

    async def set_next_run(self, task_id: UUID, next_run_at: datetime) -> None:
        """When the task is due again."""
        await self._conn.execute(QUERIES["set_next_run"], task_id, next_run_at)
