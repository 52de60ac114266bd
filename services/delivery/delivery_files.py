"""One delivery's file rendered again, outside an attempt (the export service's signed
download of an email too large to attach, and the re-download of any recorded file): the
fixed layout snapshot over the fixed range, cut into the same parts, so the same bytes the
delivery recorded (never encrypted: encryption cannot be repeated)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from uuid import UUID

from services.common.file_names import file_name
from services.common.layouts.render import render_columns
from services.common.referral_rows import ReferralRowReader
from services.delivery.parts import RowCount, counted, nth_part
from services.delivery.rendering import Rendering, delivery_rows, rendering
from services.delivery.store import Claimed, DeliveryStorePg


class DeliveryFilesPg:
    """Renders a delivery's files from PostgreSQL."""

    def __init__(self, store: DeliveryStorePg, rows: ReferralRowReader) -> None:
        self._store = store
        self._rows = rows

    async def _plan(self, delivery_id: UUID) -> tuple[Claimed, Rendering] | None:
        claimed = await self._store.described(delivery_id)
        if claimed is None or claimed.layout is None:
            return None
        context = await self._store.context(claimed.task_id)
        if context is None:
            return None
        recorded = await self._store.suppressions_recorded(claimed, claimed.layout)
        # (Not recorded: a delivery that never rendered; its audiences are applied now.)
        return claimed, rendering(claimed, context, claimed.layout, recorded=recorded)

    def _chunks(
        self, claimed: Claimed, plan: Rendering, index: int, max_rows: int, count: RowCount
    ) -> AsyncGenerator[bytes, None]:
        async def chunks() -> AsyncGenerator[bytes, None]:
            batches = delivery_rows(self._rows, claimed, plan)
            async with contextlib.aclosing(batches):
                part = counted(nth_part(batches, max_rows, index), count)
                async for chunk in render_columns(plan.layout, part, plan.fmt):
                    yield chunk

        return chunks()

    async def file_of(
        self, delivery_id: UUID, count: RowCount | None = None
    ) -> tuple[str, AsyncGenerator[bytes, None]] | None:
        """(file name, chunks), or None when the delivery, its task or its fixed layout is
        gone (a delivery that never rendered has no file); `count` receives the rows."""
        found = await self._plan(delivery_id)
        if found is None:
            return None
        claimed, plan = found
        chunks = self._chunks(claimed, plan, 0, 0, count or RowCount())
        return file_name(plan.template, plan.names, None), chunks

    async def part_of(
        self, delivery_id: UUID, index: int, max_rows: int, count: RowCount | None = None
    ) -> AsyncGenerator[bytes, None] | None:
        """The chunks of part `index` (0 = the first) of the delivery's range cut into parts
        of `max_rows` rows (0: one file), in plain text; None when the delivery, its task or
        its fixed layout is gone. `count` receives the rows rendered. Each call renders anew;
        close the generator when stopping early (the query stops)."""
        found = await self._plan(delivery_id)
        if found is None:
            return None
        claimed, plan = found
        return self._chunks(claimed, plan, index, max_rows, count or RowCount())
