"""LayoutService servicer: converts messages to layout rules and results back."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import grpc

from services.common.gen.handoff.scheduler.v1 import layouts_pb2 as pb
from services.common.gen.handoff.scheduler.v1 import layouts_pb2_grpc
from services.common.grpc_server import GrpcService
from services.scheduler.layouts import rules
from services.scheduler.layouts.messages import (
    custom_field_message,
    custom_field_spec,
    field_info_messages,
    layout_message,
    layout_spec,
    output_format,
    problem_messages,
    sample_rows,
)
from services.scheduler.layouts.model import LayoutStore
from services.scheduler.layouts.preview import PreviewRequest, PreviewRows, preview_layout

Context = grpc.aio.ServicerContext[object, object]


class LayoutServicer(layouts_pb2_grpc.LayoutServiceServicer):
    """Field catalog, custom fields, layouts and preview over one store."""

    def __init__(
        self,
        store: LayoutStore,
        rows: PreviewRows,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._store = store
        self._rows = rows
        self._clock = clock or (lambda: datetime.now(UTC))

    async def ListFields(  # noqa: N802 - gRPC method name
        self, request: pb.ListFieldsRequest, context: Context
    ) -> pb.ListFieldsResponse:
        customs = []
        if request.account_id:
            account = await rules.account_for(self._store, request.account_id)
            customs = await self._store.custom_fields(account.id)
        return pb.ListFieldsResponse(fields=field_info_messages(customs))

    async def CreateCustomField(  # noqa: N802
        self, request: pb.CreateCustomFieldRequest, context: Context
    ) -> pb.CustomField:
        saved = await rules.create_custom_field(
            self._store, request.account_id, request.field.id, custom_field_spec(request.field)
        )
        return custom_field_message(saved)

    async def GetCustomField(  # noqa: N802
        self, request: pb.GetCustomFieldRequest, context: Context
    ) -> pb.CustomField:
        saved = await rules.get_custom_field(self._store, request.account_id, request.id)
        return custom_field_message(saved)

    async def ListCustomFields(  # noqa: N802
        self, request: pb.ListCustomFieldsRequest, context: Context
    ) -> pb.ListCustomFieldsResponse:
        page = await rules.list_custom_fields(
            self._store, request.account_id, request.page_size, request.page_token
        )
        return pb.ListCustomFieldsResponse(
            fields=[custom_field_message(f) for f in page.items], next_page_token=page.next_token
        )

    async def UpdateCustomField(  # noqa: N802
        self, request: pb.UpdateCustomFieldRequest, context: Context
    ) -> pb.CustomField:
        saved = await rules.update_custom_field(
            self._store,
            request.account_id,
            request.field.id,
            custom_field_spec(request.field),
            request.field.version,
        )
        return custom_field_message(saved)

    async def DeleteCustomField(  # noqa: N802
        self, request: pb.DeleteCustomFieldRequest, context: Context
    ) -> pb.DeleteCustomFieldResponse:
        await rules.delete_custom_field(self._store, request.account_id, request.id)
        return pb.DeleteCustomFieldResponse()

    async def CreateLayout(  # noqa: N802
        self, request: pb.CreateLayoutRequest, context: Context
    ) -> pb.Layout:
        message = request.layout
        saved = await rules.create_layout(
            self._store,
            request.account_id,
            message.id,
            message.name,
            layout_spec(message),
            message.is_default,
        )
        return layout_message(saved)

    async def GetLayout(  # noqa: N802
        self, request: pb.GetLayoutRequest, context: Context
    ) -> pb.Layout:
        return layout_message(await rules.get_layout(self._store, request.account_id, request.id))

    async def GetDefaultLayout(  # noqa: N802
        self, request: pb.GetDefaultLayoutRequest, context: Context
    ) -> pb.Layout:
        return layout_message(await rules.default_layout(self._store, request.account_id))

    async def ListLayouts(  # noqa: N802
        self, request: pb.ListLayoutsRequest, context: Context
    ) -> pb.ListLayoutsResponse:
        page = await rules.list_layouts(
            self._store, request.account_id, request.page_size, request.page_token
        )
        return pb.ListLayoutsResponse(
            layouts=[layout_message(saved) for saved in page.items], next_page_token=page.next_token
        )

    async def UpdateLayout(  # noqa: N802
        self, request: pb.UpdateLayoutRequest, context: Context
    ) -> pb.Layout:
        message = request.layout
        saved = await rules.update_layout(
            self._store,
            request.account_id,
            message.id,
            message.name,
            layout_spec(message),
            message.is_default,
            message.version,
        )
        return layout_message(saved)

    async def DeleteLayout(  # noqa: N802
        self, request: pb.DeleteLayoutRequest, context: Context
    ) -> pb.DeleteLayoutResponse:
        await rules.delete_layout(self._store, request.account_id, request.id)
        return pb.DeleteLayoutResponse()

    async def PreviewLayout(  # noqa: N802
        self, request: pb.PreviewLayoutRequest, context: Context
    ) -> pb.PreviewLayoutResponse:
        source = request.WhichOneof("layout_source")
        now = self._clock()
        preview = PreviewRequest(
            account_id=request.account_id,
            layout_id=request.layout_id if source == "layout_id" else "",
            draft=layout_spec(request.layout) if source == "layout" else None,
            custom_field_drafts=tuple(
                custom_field_spec(f, f"custom_fields[{i}]")
                for i, f in enumerate(request.custom_fields)
            ),
            samples=(
                sample_rows(request.account_id, request.samples, now) if request.samples else None
            ),
            latest=request.latest,
            format=output_format(request.format, "format") if request.HasField("format") else None,
        )
        result = await preview_layout(self._store, self._rows, preview, now)
        problems, counts = problem_messages(result.problems)
        return pb.PreviewLayoutResponse(
            output=result.output,
            media_type=result.media_type,
            headers=result.headers,
            rows=[pb.PreviewLayoutResponse.Row(cells=row) for row in result.rows],
            problems=problems,
            problem_counts=counts,
        )


def layout_service(store: LayoutStore, rows: PreviewRows) -> GrpcService:
    """LayoutService, ready to mount on a gRPC server."""
    servicer = LayoutServicer(store, rows)
    return GrpcService(
        pb.DESCRIPTOR.services_by_name["LayoutService"].full_name,
        lambda server: layouts_pb2_grpc.add_LayoutServiceServicer_to_server(servicer, server),
    )
