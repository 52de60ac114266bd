"""The first rows of a task's next run, rendered as the file would hold them."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from services.common.layouts.codec import format_from_json
from services.common.layouts.compiler import RenderContext, compile_layout
from services.common.layouts.render import render_table
from services.common.referral_rows import ReferralRowReader
from services.scheduler.layouts.model import LayoutStore
from services.scheduler.layouts.rules import default_layout, get_layout
from services.scheduler.tasks.model import SavedTask

SAMPLE_ROWS = 10
SAMPLE_MAX_CHARS = 1024 * 1024


async def next_run_sample(
    task: SavedTask,
    through_seq: int,
    layouts: LayoutStore,
    rows: ReferralRowReader,
    now: datetime,
) -> bytes:
    """Up to SAMPLE_ROWS rows of (cursor, through_seq], uncompressed, with the task's layout."""
    account = str(task.account_id)
    spec = task.spec
    saved = (
        await get_layout(layouts, account, str(spec.layout_id))
        if spec.layout_id is not None
        else await default_layout(layouts, account)
    )
    customs = {f.spec.name: f.spec for f in await layouts.custom_fields(task.account_id)}
    context = await rows.render_context(task.account_id) or RenderContext()
    context = dataclasses.replace(context, delivery_id="preview", delivery_time=now)
    layout = compile_layout(saved.spec, customs, context)
    fmt = format_from_json(spec.format) if spec.format else saved.spec.format
    batches = rows.rows_in_range(
        task.account_id, task.delivered_seq, through_seq, spec.campaign_ids, layout.row_fields
    )
    sample: list[list[str]] = []
    try:
        async for batch in batches:
            sample.extend(list(row) for row in zip(*batch, strict=True))
            if len(sample) >= SAMPLE_ROWS:
                break
    finally:
        await batches.aclose()
    output, _ = render_table(
        layout, sample[:SAMPLE_ROWS], dataclasses.replace(fmt, gzip=False),
        max_chars=SAMPLE_MAX_CHARS,
    )  # fmt: skip
    return output
