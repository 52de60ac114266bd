"""Task and delivery values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from services.scheduler.tasks.schedules import Schedule


@dataclass(frozen=True)
class TaskSpec:
    """What a caller sets on a task."""

    name: str
    connection_id: UUID
    campaign_ids: tuple[UUID, ...] | None  # None: every campaign, also later ones
    layout_id: UUID | None  # None: the account's default layout
    format: dict[str, Any] | None  # the engine's format JSON; None: the layout's own
    schedule: Schedule
    time_zone: str
    enabled: bool = True
    send_empty: bool = False
    audience_ids: tuple[UUID, ...] = ()  # custom audiences that target it (their kind decides)


@dataclass(frozen=True)
class SavedTask:
    """A stored task with its cursor and state."""

    id: UUID
    account_id: UUID
    spec: TaskSpec
    delivered_seq: int
    next_run_at: datetime
    attention: str | None
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class DeliveredFile:
    """One file a delivery wrote."""

    path: str
    rows: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class SavedDelivery:
    """One run of a task over a fixed range."""

    id: UUID
    task_id: UUID
    account_id: UUID
    purpose: str
    after_seq: int
    through_seq: int
    state: str
    layout: dict[str, Any] | None
    reserved_at: datetime
    attempts: int
    lease_until: datetime | None
    next_attempt_at: datetime
    rows: int | None
    bytes: int | None
    files: tuple[DeliveredFile, ...]
    error: str | None
    diagnosis: str | None
    finished_at: datetime | None
    resend_of: UUID | None
    suppressed: int | None = None  # referrals of its range the audiences held back


@dataclass(frozen=True)
class AttentionEvent:
    """Something an account must act on."""

    id: UUID
    task_id: UUID | None
    delivery_id: UUID | None
    diagnosis: str
    message: str
    created_at: datetime
    resolved_at: datetime | None
    connection_id: UUID | None = None  # an endpoint disabled (real-time API delivery)
