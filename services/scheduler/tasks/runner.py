"""The scheduler's loop: reserve due deliveries, then hand waiting ones to the delivery service.

Each tick, in one transaction, reads the safe watermark first, then locks the due tasks
(`FOR UPDATE SKIP LOCKED`, so any number of scheduler replicas never reserve one run
twice) and gives each without an open delivery a delivery over (cursor, watermark]; every
due task's next run time moves on, so runs missed while a delivery was open collapse into
one. Then deliveries waiting for an attempt — new, retrying after their backoff, or
running under a lease that ran out because their process died — are handed to the
delivery service with the same range; a delivery service that is down is asked again
later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol
from uuid import UUID

import grpc
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from services.common.gen.handoff.delivery.v1 import delivery_pb2, delivery_pb2_grpc
from services.scheduler.tasks.schedules import ScheduleError, next_run
from services.scheduler.tasks.store import TaskStorePg

log = logging.getLogger(__name__)
_meter = metrics.get_meter("handoff.scheduler")
LAG_EVERY_S = 15.0


class DeliveryJobs(Protocol):
    """Where reserved deliveries are sent to run."""

    async def start(self, delivery_id: UUID, after_seq: int, through_seq: int) -> None: ...


class GrpcDeliveryJobs:
    """DeliveryService over a channel that carries the scheduler's credential."""

    def __init__(self, channel: grpc.aio.Channel, timeout_s: float = 10.0) -> None:
        self._stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        self._timeout_s = timeout_s

    async def start(self, delivery_id: UUID, after_seq: int, through_seq: int) -> None:
        """Ask for an attempt (the service answers at once; the attempt runs there)."""
        await self._stub.StartDelivery(
            delivery_pb2.StartDeliveryRequest(
                delivery_id=str(delivery_id),
                range=delivery_pb2.SeqRange(after_seq=after_seq, through_seq=through_seq),
            ),
            timeout=self._timeout_s,
        )


@dataclass(frozen=True)
class Tick:
    """What one tick did."""

    reserved: int
    issued: int


class TaskRunner:
    """Runs ticks until told to stop."""

    def __init__(
        self,
        store: TaskStorePg,
        jobs: DeliveryJobs,
        *,
        tick_s: float = 1.0,
        batch: int = 500,
        reissue_s: float = 15.0,
        issue_concurrency: int = 16,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._jobs = jobs
        self._tick_s = tick_s
        self._batch = batch
        self._reissue = timedelta(seconds=reissue_s)
        self._issuing = asyncio.Semaphore(issue_concurrency)
        self._now = now
        self._lags: list[tuple[UUID, UUID, float]] = []
        self._lags_read = 0.0
        _meter.create_observable_gauge(
            "handoff.delivery.lag",
            callbacks=[self._observe_lags],
            unit="s",
            description="Per task: how long its oldest referral not yet delivered has waited",
        )

    def _observe_lags(self, options: CallbackOptions) -> list[Observation]:
        return [
            Observation(lag, {"task_id": str(task), "account_id": str(account)})
            for task, account, lag in self._lags
        ]

    async def refresh_lags(self) -> list[tuple[UUID, UUID, float]]:
        """Read every enabled task's delivery lag (for the metric)."""
        self._lags = await self._store.delivery_lags()
        return self._lags

    async def reserve_due(self, now: datetime) -> int:
        """Reserve a delivery for every due task without an open one; how many."""
        reserved = 0
        while True:
            async with self._store.reservation() as tx:
                due = await tx.due_tasks(now, self._batch)
                for task, has_open in due:
                    spec = task.spec
                    try:
                        upcoming = next_run(spec.schedule, spec.time_zone, now, task.created_at)
                    except ScheduleError:
                        log.exception("task %s has a schedule that no longer runs", task.id)
                        upcoming = now + timedelta(days=1)
                    moved = tx.watermark > task.delivered_seq
                    # Other accounts' referrals move the watermark too: only the task's
                    # own scope makes a file (an empty one only with send_empty).
                    news = moved and not has_open and await tx.has_news(task, tx.watermark)
                    if not has_open and (news or spec.send_empty):
                        await tx.reserve(uuid.uuid4(), task, tx.watermark, now)
                        reserved += 1
                    elif not has_open and moved:
                        await tx.skip_empty(task.id, tx.watermark)
                    await tx.set_next_run(task.id, upcoming)
            if len(due) < self._batch:
                return reserved

    async def issue_waiting(self, now: datetime) -> int:
        """Hand every delivery waiting for an attempt to the delivery service; how many."""
        jobs = await self._store.jobs_to_issue(now, now + self._reissue, 1000)

        async def issue(delivery_id: UUID, after: int, through: int) -> None:
            async with self._issuing:
                try:
                    await self._jobs.start(delivery_id, after, through)
                except grpc.aio.AioRpcError as error:
                    log.warning(
                        "delivery service did not take delivery %s (%s: %s); asking again later",
                        delivery_id, error.code().name, error.details(),
                    )  # fmt: skip

        await asyncio.gather(*(issue(*job) for job in jobs))
        return len(jobs)

    async def tick(self) -> Tick:
        """One round: reserve, then issue."""
        now = self._now()
        reserved = await self.reserve_due(now)
        issued = await self.issue_waiting(now)
        return Tick(reserved, issued)

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every tick_s until `stop` is set; a failed tick is logged and retried."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                await self.tick()
                if loop.time() - self._lags_read >= LAG_EVERY_S:
                    self._lags_read = loop.time()
                    await self.refresh_lags()
            except Exception:
                log.exception("scheduler tick failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._tick_s)
