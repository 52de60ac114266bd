"""One delivery's file rendered again, outside an attempt (the export service's signed
download of an email too large to attach): the fixed layout snapshot over the fixed
range, so the same bytes the delivery recorded."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from uuid import UUID

from services.common.file_names import file_name
from services.common.layouts.render import render_columns
from services.common.referral_rows import ReferralRowReader
from services.delivery.rendering import delivery_rows, rendering
from services.delivery.store import DeliveryStorePg


class DeliveryFilesPg:
    """Renders a delivery's (single) file from PostgreSQL."""

    def __init__(self, store: DeliveryStorePg, rows: ReferralRowReader) -> None:
        self._store = store
        self._rows = rows

    async def file_of(self, delivery_id: UUID) -> tuple[str, AsyncIterator[bytes]] | None:
        """(file name, chunks), or None when the delivery, its task or its fixed layout is
        gone (a delivery that never rendered has no file)."""
        claimed = await self._store.described(delivery_id)
        if claimed is None or claimed.layout is None:
            return None
        context = await self._store.context(claimed.task_id)
        if context is None:
            return None
        plan = rendering(claimed, context, claimed.layout)

        async def chunks() -> AsyncIterator[bytes]:
            batches = delivery_rows(self._rows, claimed, plan)
            async with contextlib.aclosing(batches):
                async for chunk in render_columns(plan.layout, batches, plan.fmt):
                    yield chunk

        return file_name(plan.template, plan.names, None), chunks()
