"""Task rules: validate a task (every problem named), and the calls over the store."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime
from typing import Protocol
from uuid import UUID

from services.common.audiences.targets import Targeting
from services.common.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    FieldProblem,
    InvalidArgumentError,
    NotFoundError,
)
from services.common.ids import parse_id
from services.common.paging import Page, decode_token, fetch_page, invalid_token, page_size
from services.ingest.accounts import check_name, check_time_zone
from services.scheduler.tasks.model import AttentionEvent, SavedDelivery, SavedTask, TaskSpec
from services.scheduler.tasks.schedules import ScheduleError, check_schedule, next_run


class TaskStore(Protocol):
    """What the task rules need from the store (TaskStorePg)."""

    async def account_state(self, account_id: UUID) -> tuple[bool, str] | None: ...
    async def foreign_campaigns(self, account_id: UUID, ids: list[UUID]) -> list[UUID]: ...
    async def layout_exists(self, account_id: UUID, layout_id: UUID) -> bool: ...
    async def connection_exists(self, account_id: UUID, connection_id: UUID) -> bool: ...
    async def audience_targeting(self, account_id: UUID, ids: list[UUID]) -> Targeting: ...
    async def insert_task(
        self, task_id: UUID, account_id: UUID, spec: TaskSpec, backfill_from: datetime | None,
        next_run_at: datetime,
    ) -> SavedTask | None: ...  # fmt: skip
    async def get_task(self, account_id: UUID, task_id: UUID) -> SavedTask | None: ...
    async def page_tasks(self, account_id: UUID, after: str, limit: int) -> list[SavedTask]: ...
    async def update_task(
        self, account_id: UUID, task_id: UUID, spec: TaskSpec, next_run_at: datetime
    ) -> SavedTask | None: ...
    async def delete_task(self, account_id: UUID, task_id: UUID) -> bool: ...
    async def set_enabled(
        self, account_id: UUID, task_id: UUID, enabled: bool
    ) -> SavedTask | None: ...
    async def run_now(self, account_id: UUID, task_id: UUID) -> SavedTask | None: ...
    async def open_delivery(self, task_id: UUID) -> bool: ...
    async def safe_watermark(self) -> int: ...
    async def count_in_range(
        self, account_id: UUID, after: int, through: int, campaigns: tuple[UUID, ...] | None
    ) -> int: ...
    async def page_deliveries(
        self, account_id: UUID, task_id: UUID, before: tuple[datetime, UUID] | None, limit: int
    ) -> list[SavedDelivery]: ...
    async def get_delivery(self, account_id: UUID, delivery_id: UUID) -> SavedDelivery | None: ...
    async def insert_resend(self, original: SavedDelivery, resend_id: UUID) -> SavedDelivery: ...
    async def task_encrypts(self, task_id: UUID) -> bool: ...
    async def insert_redelivery(
        self, task: SavedTask, redelivery_id: UUID, field: str, start: datetime, end: datetime
    ) -> SavedDelivery: ...
    async def attention_events(
        self, account_id: UUID, include_resolved: bool
    ) -> list[AttentionEvent]: ...


def _invalid(problems: list[FieldProblem]) -> InvalidArgumentError:
    said = "; ".join(f"{p.field}: {p.message}" for p in problems[:3])
    return InvalidArgumentError(f"task is invalid: {said}", problems)


async def validated(
    store: TaskStore, account_id: UUID, spec: TaskSpec, zone_default: str
) -> TaskSpec:
    """The task with defaults filled, or InvalidArgumentError listing every problem."""
    problems: list[FieldProblem] = []
    name = spec.name
    try:
        name = check_name(spec.name)
    except InvalidArgumentError as exc:
        problems += [replace(p, field="task.name") for p in exc.problems]
    zone = spec.time_zone.strip() or zone_default
    try:
        zone = check_time_zone(zone)
    except InvalidArgumentError as exc:
        problems += [replace(p, field="task.time_zone") for p in exc.problems]
        zone = "UTC"
    schedule = spec.schedule
    try:
        schedule = check_schedule(spec.schedule, zone)
    except ScheduleError as exc:
        field = "task.schedule.cron" if spec.schedule.cron else "task.schedule"
        if spec.schedule.every_s and not spec.schedule.cron:
            field = "task.schedule.every_seconds"
        problems.append(FieldProblem(field, "INVALID_FORMAT", str(exc)))
    if not await store.connection_exists(account_id, spec.connection_id):
        problems.append(
            FieldProblem(
                "task.connection_id",
                "NOT_FOUND",
                f"no connection {spec.connection_id} in this account",
            )
        )
    if spec.layout_id is not None and not await store.layout_exists(account_id, spec.layout_id):
        problems.append(
            FieldProblem(
                "task.layout_id", "NOT_FOUND", f"no layout {spec.layout_id} in this account"
            )
        )
    if spec.campaign_ids is not None:
        foreign = set(await store.foreign_campaigns(account_id, list(spec.campaign_ids)))
        for i, campaign in enumerate(spec.campaign_ids):
            if campaign in foreign:
                problems.append(
                    FieldProblem(
                        f"task.campaign_ids[{i}]",
                        "NOT_FOUND",
                        f"no campaign {campaign} in this account",
                    )
                )
    targets = await store.audience_targeting(account_id, list(spec.audience_ids))
    problems += targets.problems
    if problems:
        raise _invalid(problems)
    if targets.refusals:
        raise FailedPreconditionError("; ".join(targets.refusals))
    campaigns = None if spec.campaign_ids is None else tuple(dict.fromkeys(spec.campaign_ids))
    return replace(
        spec, name=name, time_zone=zone, schedule=schedule, campaign_ids=campaigns,
        audience_ids=tuple(dict.fromkeys(spec.audience_ids)),
    )  # fmt: skip


async def _account(store: TaskStore, account_id: str, *, writing: bool) -> tuple[UUID, str]:
    account = parse_id("account_id", account_id)
    state = await store.account_state(account)
    if state is None:
        raise NotFoundError(f"account {account} does not exist")
    archived, zone = state
    if writing and archived:
        raise FailedPreconditionError(f"account {account} is archived")
    return account, zone


async def create_task(
    store: TaskStore,
    account_id: str,
    spec: TaskSpec,
    task_id: str,
    backfill_from: datetime | None,
    now: datetime,
) -> SavedTask:
    """Store a new task; it delivers what arrives from now (or since `backfill_from`)."""
    account, zone = await _account(store, account_id, writing=True)
    wanted = parse_id("task.id", task_id, required=False)
    clean = await validated(store, account, spec, zone)
    due = next_run(clean.schedule, clean.time_zone, now, now)
    saved = await store.insert_task(wanted, account, clean, backfill_from, due)
    if saved is None:
        raise AlreadyExistsError(
            f"a task named {clean.name!r} (or with id {wanted}) exists already"
        )
    return saved


async def get_task(store: TaskStore, account_id: str, task_id: str) -> SavedTask:
    """The account's task, or NotFoundError."""
    account, wanted = parse_id("account_id", account_id), parse_id("id", task_id)
    found = await store.get_task(account, wanted)
    if found is None:
        raise NotFoundError(f"task {wanted} does not exist in account {account}")
    return found


async def list_tasks(
    store: TaskStore, account_id: str, size: int, page_token: str
) -> Page[SavedTask]:
    """A page of tasks by name, after the token's position."""
    account = parse_id("account_id", account_id)
    after = decode_token(page_token)
    return await fetch_page(
        lambda limit: store.page_tasks(account, after, limit),
        page_size(size),
        lambda t: t.spec.name,
    )


async def update_task(
    store: TaskStore, account_id: str, task_id: str, spec: TaskSpec, now: datetime
) -> SavedTask:
    """Replace a task's settings (its cursor stays); clears attention."""
    current = await get_task(store, account_id, task_id)
    _, zone = await _account(store, account_id, writing=True)
    clean = await validated(store, current.account_id, spec, zone)
    due = next_run(clean.schedule, clean.time_zone, now, current.created_at)
    saved = await store.update_task(current.account_id, current.id, clean, due)
    if saved is None:
        raise AlreadyExistsError(f"a task named {clean.name!r} exists already")
    return saved


async def delete_task(store: TaskStore, account_id: str, task_id: str) -> None:
    """Delete a task and its delivery history."""
    current = await get_task(store, account_id, task_id)
    await store.delete_task(current.account_id, current.id)


async def set_enabled(store: TaskStore, account_id: str, task_id: str, enabled: bool) -> SavedTask:
    """Pause or resume a task."""
    current = await get_task(store, account_id, task_id)
    if enabled:
        await _account(store, account_id, writing=True)
    changed = await store.set_enabled(current.account_id, current.id, enabled)
    if changed is None:
        raise NotFoundError(f"task {current.id} does not exist")
    return changed


async def run_now(store: TaskStore, account_id: str, task_id: str) -> SavedTask:
    """Make a task due now."""
    current = await get_task(store, account_id, task_id)
    if current.attention:
        raise FailedPreconditionError(
            f"task {current.id} needs attention first: {current.attention}"
        )
    changed = await store.run_now(current.account_id, current.id)
    if changed is None:
        raise NotFoundError(f"task {current.id} does not exist")
    return changed


async def preview_next_run(
    store: TaskStore, account_id: str, task_id: str
) -> tuple[SavedTask, int, int, bool]:
    """(task, through_seq, referrals, open delivery) of a run reserved now."""
    task = await get_task(store, account_id, task_id)
    through = await store.safe_watermark()
    count = await store.count_in_range(
        task.account_id, task.delivered_seq, through, task.spec.campaign_ids
    )
    return task, through, count, await store.open_delivery(task.id)


async def list_deliveries(
    store: TaskStore, account_id: str, task_id: str, size: int, page_token: str
) -> Page[SavedDelivery]:
    """A page of a task's deliveries, newest first."""
    task = await get_task(store, account_id, task_id)
    before = None
    if page_token:
        at, _, last = decode_token(page_token).partition("|")
        try:
            before = (datetime.fromisoformat(at), UUID(last))
        except ValueError as exc:
            raise invalid_token() from exc
    return await fetch_page(
        lambda limit: store.page_deliveries(task.account_id, task.id, before, limit),
        page_size(size),
        lambda d: f"{d.reserved_at.isoformat()}|{d.id}",
    )


async def get_delivery(store: TaskStore, account_id: str, delivery_id: str) -> SavedDelivery:
    """The account's delivery, or NotFoundError."""
    account, wanted = parse_id("account_id", account_id), parse_id("id", delivery_id)
    found = await store.get_delivery(account, wanted)
    if found is None:
        raise NotFoundError(f"delivery {wanted} does not exist in account {account}")
    return found


async def resend_delivery(store: TaskStore, account_id: str, delivery_id: str) -> SavedDelivery:
    """A new delivery repeating a finished one exactly (range, layout, file names)."""
    original = await get_delivery(store, account_id, delivery_id)
    if original.state != "succeeded" or original.layout is None:
        raise FailedPreconditionError(
            f"delivery {original.id} is {original.state}: only a delivery that succeeded "
            "can be resent"
        )
    if await store.task_encrypts(original.task_id):
        raise FailedPreconditionError(
            f"delivery {original.id} went out OpenPGP-encrypted: every encryption uses a fresh "
            "session key, so a resend cannot repeat its bytes; RedeliverTimeFrame sends the "
            "same referrals encrypted anew"
        )
    return await store.insert_resend(original, uuid.uuid4())


async def redeliver(
    store: TaskStore, account_id: str, task_id: str, start: datetime | None, end: datetime | None,
    field: str,
) -> SavedDelivery:  # fmt: skip
    """A delivery of the task's referrals whose `field` time is in [start, end), whatever
    was delivered before; the task's cursor does not move."""
    task = await get_task(store, account_id, task_id)
    problems = []
    if start is None:
        problems.append(FieldProblem("from", "REQUIRED", "is required"))
    if end is None:
        problems.append(FieldProblem("to", "REQUIRED", "is required"))
    if start is not None and end is not None and end <= start:
        problems.append(FieldProblem("to", "OUT_OF_RANGE", "must be after from"))
    if problems:
        raise InvalidArgumentError(
            f"time frame is invalid: {problems[0].field} {problems[0].message}", problems
        )
    assert start is not None
    assert end is not None
    return await store.insert_redelivery(task, uuid.uuid4(), field, start, end)


async def attention(
    store: TaskStore, account_id: str, include_resolved: bool
) -> list[AttentionEvent]:
    """What the account must act on."""
    account, _ = await _account(store, account_id, writing=False)
    return await store.attention_events(account, include_resolved)
