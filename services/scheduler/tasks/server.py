"""TaskService servicer: messages to task specs and back."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import grpc

from services.common.errors import FieldProblem, InvalidArgumentError
from services.common.gen.handoff.delivery.v1 import delivery_pb2
from services.common.gen.handoff.scheduler.v1 import tasks_pb2, tasks_pb2_grpc
from services.common.grpc_server import GrpcService
from services.common.layouts.codec import format_from_json, format_to_json
from services.common.referral_rows import ReferralRowReader
from services.common.timestamps import timestamp_message
from services.scheduler.layouts.messages import output_format, output_format_message
from services.scheduler.layouts.model import LayoutStore
from services.scheduler.tasks import rules
from services.scheduler.tasks.model import AttentionEvent, SavedDelivery, SavedTask, TaskSpec
from services.scheduler.tasks.preview import next_run_sample
from services.scheduler.tasks.rules import TaskStore
from services.scheduler.tasks.schedules import Schedule

Context = grpc.aio.ServicerContext[object, object]


def _uuid(field: str, value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        problem = FieldProblem(field, "INVALID_FORMAT", f"must be a UUID, got {value[:64]!r}")
        raise InvalidArgumentError(f"{field} must be a UUID", [problem]) from exc


def spec_of(message: tasks_pb2.Task) -> TaskSpec:
    """The domain spec of a Task message (ids checked for form; existence by the rules)."""
    if not message.connection_id:
        problem = FieldProblem("task.connection_id", "REQUIRED", "is required")
        raise InvalidArgumentError(problem.message, [problem])
    campaigns = tuple(
        _uuid(f"task.campaign_ids[{i}]", c) for i, c in enumerate(message.campaign_ids)
    )
    which = message.schedule.WhichOneof("kind")
    schedule = Schedule(
        cron=message.schedule.cron if which == "cron" else "",
        every_s=message.schedule.every_seconds if which == "every_seconds" else 0,
    )
    fmt = None
    if message.HasField("format"):
        fmt = format_to_json(output_format(message.format, "task.format"))
    return TaskSpec(
        name=message.name,
        connection_id=_uuid("task.connection_id", message.connection_id),
        campaign_ids=campaigns or None,
        layout_id=_uuid("task.layout_id", message.layout_id) if message.layout_id else None,
        format=fmt,
        schedule=schedule,
        time_zone=message.time_zone,
        enabled=not message.paused,
        send_empty=message.send_empty,
        audience_ids=tuple(
            _uuid(f"task.audience_ids[{i}]", a) for i, a in enumerate(message.audience_ids)
        ),
    )


def task_message(task: SavedTask) -> tasks_pb2.Task:
    """The Task message of a stored task."""
    spec = task.spec
    schedule = (
        tasks_pb2.Schedule(cron=spec.schedule.cron)
        if spec.schedule.cron
        else tasks_pb2.Schedule(every_seconds=spec.schedule.every_s)
    )
    message = tasks_pb2.Task(
        id=str(task.id),
        account_id=str(task.account_id),
        name=spec.name,
        connection_id=str(spec.connection_id),
        campaign_ids=[str(c) for c in spec.campaign_ids or ()],
        layout_id=str(spec.layout_id) if spec.layout_id else "",
        schedule=schedule,
        time_zone=spec.time_zone,
        paused=not spec.enabled,
        send_empty=spec.send_empty,
        audience_ids=[str(a) for a in spec.audience_ids],
        delivered_seq=task.delivered_seq,
        next_run_at=timestamp_message(task.next_run_at),
        attention=task.attention or "",
        version=task.version,
        created_at=timestamp_message(task.created_at),
        updated_at=timestamp_message(task.updated_at),
    )
    if spec.format is not None:
        message.format.CopyFrom(output_format_message(format_from_json(spec.format)))
    return message


def delivery_message(delivery: SavedDelivery) -> tasks_pb2.Delivery:
    """The Delivery message."""
    return tasks_pb2.Delivery(
        id=str(delivery.id),
        task_id=str(delivery.task_id),
        purpose=delivery.purpose,
        range=delivery_pb2.SeqRange(after_seq=delivery.after_seq, through_seq=delivery.through_seq),
        state=delivery.state,
        attempts=delivery.attempts,
        reserved_at=timestamp_message(delivery.reserved_at),
        next_attempt_at=timestamp_message(delivery.next_attempt_at),
        finished_at=timestamp_message(delivery.finished_at),
        rows=delivery.rows or 0,
        bytes=delivery.bytes or 0,
        files=[
            tasks_pb2.DeliveredFile(path=f.path, rows=f.rows, bytes=f.bytes, sha256=f.sha256)
            for f in delivery.files
        ],
        error=delivery.error or "",
        diagnosis=delivery.diagnosis or "",
        resend_of=str(delivery.resend_of) if delivery.resend_of else "",
        suppressed=delivery.suppressed or 0,
        layout_id=str((delivery.layout or {}).get("layout_id") or ""),
        layout_version=int((delivery.layout or {}).get("layout_version") or 0),
        custom_field_versions={
            name: int(field.get("version") or 0)
            for name, field in (delivery.layout or {}).get("custom_fields", {}).items()
        },
    )


def _event_message(event: AttentionEvent) -> tasks_pb2.AttentionEvent:
    return tasks_pb2.AttentionEvent(
        id=str(event.id),
        task_id=str(event.task_id) if event.task_id else "",
        delivery_id=str(event.delivery_id) if event.delivery_id else "",
        diagnosis=event.diagnosis,
        message=event.message,
        created_at=timestamp_message(event.created_at),
        resolved_at=timestamp_message(event.resolved_at),
        connection_id=str(event.connection_id) if event.connection_id else "",
    )


class TaskServicer(tasks_pb2_grpc.TaskServiceServicer):
    """Tasks, their deliveries and what needs attention."""

    def __init__(
        self,
        store: TaskStore,
        layouts: LayoutStore,
        rows: ReferralRowReader,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._store = store
        self._layouts = layouts
        self._rows = rows
        self._clock = clock or (lambda: datetime.now(UTC))

    async def CreateTask(  # noqa: N802
        self, request: tasks_pb2.CreateTaskRequest, context: Context
    ) -> tasks_pb2.Task:
        task = request.task
        spec = spec_of(task)
        backfill = (
            task.backfill_from.ToDatetime(tzinfo=UTC) if task.HasField("backfill_from") else None
        )
        saved = await rules.create_task(
            self._store, request.account_id, spec, task.id, backfill, self._clock()
        )
        return task_message(saved)

    async def GetTask(  # noqa: N802
        self, request: tasks_pb2.GetTaskRequest, context: Context
    ) -> tasks_pb2.Task:
        return task_message(await rules.get_task(self._store, request.account_id, request.id))

    async def ListTasks(  # noqa: N802
        self, request: tasks_pb2.ListTasksRequest, context: Context
    ) -> tasks_pb2.ListTasksResponse:
        page = await rules.list_tasks(
            self._store, request.account_id, request.page_size, request.page_token
        )
        return tasks_pb2.ListTasksResponse(
            tasks=[task_message(t) for t in page.items], next_page_token=page.next_token
        )

    async def UpdateTask(  # noqa: N802
        self, request: tasks_pb2.UpdateTaskRequest, context: Context
    ) -> tasks_pb2.Task:
        saved = await rules.update_task(
            self._store, request.account_id, request.task.id, spec_of(request.task), self._clock()
        )
        return task_message(saved)

    async def DeleteTask(  # noqa: N802
        self, request: tasks_pb2.DeleteTaskRequest, context: Context
    ) -> tasks_pb2.DeleteTaskResponse:
        await rules.delete_task(self._store, request.account_id, request.id)
        return tasks_pb2.DeleteTaskResponse()

    async def RunTaskNow(  # noqa: N802
        self, request: tasks_pb2.RunTaskNowRequest, context: Context
    ) -> tasks_pb2.Task:
        return task_message(await rules.run_now(self._store, request.account_id, request.id))

    async def PauseTask(  # noqa: N802
        self, request: tasks_pb2.PauseTaskRequest, context: Context
    ) -> tasks_pb2.Task:
        return task_message(
            await rules.set_enabled(self._store, request.account_id, request.id, False)
        )

    async def ResumeTask(  # noqa: N802
        self, request: tasks_pb2.ResumeTaskRequest, context: Context
    ) -> tasks_pb2.Task:
        return task_message(
            await rules.set_enabled(self._store, request.account_id, request.id, True)
        )

    async def PreviewNextRun(  # noqa: N802
        self, request: tasks_pb2.PreviewNextRunRequest, context: Context
    ) -> tasks_pb2.PreviewNextRunResponse:
        task, through, count, open_delivery = await rules.preview_next_run(
            self._store, request.account_id, request.id
        )
        sample = await next_run_sample(task, through, self._layouts, self._rows, self._clock())
        return tasks_pb2.PreviewNextRunResponse(
            next_run_at=timestamp_message(task.next_run_at),
            range=delivery_pb2.SeqRange(after_seq=task.delivered_seq, through_seq=through),
            referrals=count,
            open_delivery=open_delivery,
            sample=sample,
        )

    async def ListDeliveries(  # noqa: N802
        self, request: tasks_pb2.ListDeliveriesRequest, context: Context
    ) -> tasks_pb2.ListDeliveriesResponse:
        page = await rules.list_deliveries(
            self._store, request.account_id, request.task_id, request.page_size, request.page_token
        )
        return tasks_pb2.ListDeliveriesResponse(
            deliveries=[delivery_message(d) for d in page.items], next_page_token=page.next_token
        )

    async def GetDelivery(  # noqa: N802
        self, request: tasks_pb2.GetDeliveryRequest, context: Context
    ) -> tasks_pb2.Delivery:
        return delivery_message(
            await rules.get_delivery(self._store, request.account_id, request.id)
        )

    async def ResendDelivery(  # noqa: N802
        self, request: tasks_pb2.ResendDeliveryRequest, context: Context
    ) -> tasks_pb2.Delivery:
        return delivery_message(
            await rules.resend_delivery(self._store, request.account_id, request.id)
        )

    async def RedeliverTimeFrame(  # noqa: N802
        self, request: tasks_pb2.RedeliverTimeFrameRequest, context: Context
    ) -> tasks_pb2.Delivery:
        start = getattr(request, "from")  # a Python keyword as a field name
        start_at = start.ToDatetime(tzinfo=UTC) if request.HasField("from") else None
        end_at = request.to.ToDatetime(tzinfo=UTC) if request.HasField("to") else None
        field = "opted_in_at" if request.by == tasks_pb2.OPTED_IN_AT else "received_at"
        delivery = await rules.redeliver(
            self._store, request.account_id, request.task_id, start_at, end_at, field
        )
        return delivery_message(delivery)

    async def ListAttention(  # noqa: N802
        self, request: tasks_pb2.ListAttentionRequest, context: Context
    ) -> tasks_pb2.ListAttentionResponse:
        events = await rules.attention(self._store, request.account_id, request.include_resolved)
        return tasks_pb2.ListAttentionResponse(events=[_event_message(e) for e in events])


def task_service(store: TaskStore, layouts: LayoutStore, rows: ReferralRowReader) -> GrpcService:
    """TaskService for grpc_server()."""
    servicer = TaskServicer(store, layouts, rows)
    return GrpcService(
        tasks_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name,
        lambda server: tasks_pb2_grpc.add_TaskServiceServicer_to_server(servicer, server),
    )
