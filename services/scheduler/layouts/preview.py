"""Preview: render a saved or draft layout over the account's latest referrals or samples."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol
from uuid import UUID

from services.common.errors import FieldProblem, InvalidArgumentError, NotFoundError
from services.common.layouts.compiler import RenderContext, compile_layout
from services.common.layouts.formats import media_type
from services.common.layouts.model import CustomFieldSpec, LayoutSpec, OutputFormat
from services.common.layouts.problems import ProblemLog, ProblemSummary
from services.common.layouts.render import OutputTooLargeError, render_table
from services.common.layouts.validation import (
    custom_field_problems,
    format_problems,
    layout_problems,
    require_no_problems,
)
from services.scheduler.layouts.model import LayoutStore
from services.scheduler.layouts.rules import account_for, default_layout, get_layout

DEFAULT_LATEST = 10
MAX_ROWS = 100
# A preview answers in one message: its cells are kept well below the gRPC size limit.
PREVIEW_MAX_CHARS = 8 * 1024 * 1024
MAX_PROBLEMS_SHOWN = 1000


class PreviewRows(Protocol):
    """Where preview rows and the account's render context come from."""

    async def latest_rows(self, account_id: UUID, limit: int) -> list[list[str]]: ...
    async def render_context(self, account_id: UUID) -> RenderContext | None: ...


@dataclass(frozen=True)
class PreviewRequest:
    """What to render: a saved layout (by id), a draft, or the default; over which rows."""

    account_id: str
    layout_id: str = ""
    draft: LayoutSpec | None = None
    custom_field_drafts: tuple[CustomFieldSpec, ...] = ()
    samples: Sequence[Sequence[str]] | None = None
    latest: int = 0
    format: OutputFormat | None = None


@dataclass(frozen=True)
class PreviewResult:
    """The output exactly as delivered (uncompressed), as a table, and its problems."""

    output: bytes
    media_type: str
    headers: tuple[str, ...]
    rows: list[tuple[str, ...]]
    problems: ProblemSummary


def _latest(requested: int) -> int:
    if requested == 0:
        return DEFAULT_LATEST
    if not 0 < requested <= MAX_ROWS:
        problem = FieldProblem("latest", "OUT_OF_RANGE", f"must be 1-{MAX_ROWS}")
        raise InvalidArgumentError(f"latest {problem.message}", [problem])
    return requested


async def preview_layout(
    store: LayoutStore, source: PreviewRows, request: PreviewRequest, now: datetime | None = None
) -> PreviewResult:
    """Render without saving; drafts are validated exactly as a save would."""
    account = await account_for(store, request.account_id)
    customs = {f.spec.name: f.spec for f in await store.custom_fields(account.id)}
    for draft in request.custom_field_drafts:
        customs.pop(draft.name, None)
    problems: list[FieldProblem] = []
    for i, draft in enumerate(request.custom_field_drafts):
        others = {**customs, **{d.name: d for d in request.custom_field_drafts if d is not draft}}
        problems += custom_field_problems(draft, others, prefix=f"custom_fields[{i}]")
    customs.update({d.name: d for d in request.custom_field_drafts})
    if request.draft is not None:
        spec = request.draft
        problems += layout_problems(spec, set(customs))
    elif request.layout_id:
        spec = (await get_layout(store, request.account_id, request.layout_id)).spec
    else:
        spec = (await default_layout(store, request.account_id)).spec
    if request.format is not None:
        problems += format_problems(request.format, "format")
    require_no_problems("preview", problems)
    if request.samples is not None:
        if len(request.samples) > MAX_ROWS:
            problem = FieldProblem("samples", "TOO_MANY", f"at most {MAX_ROWS} samples")
            raise InvalidArgumentError(f"samples: {problem.message}", [problem])
        rows = [list(r) for r in request.samples]
    else:
        rows = await source.latest_rows(account.id, _latest(request.latest))
    context = await source.render_context(account.id)
    if context is None:
        raise NotFoundError(f"account {account.id} does not exist")
    context = dataclasses.replace(
        context, delivery_id="preview", delivery_time=now or datetime.now(UTC)
    )
    layout = compile_layout(spec, customs, context, ProblemLog(MAX_PROBLEMS_SHOWN))
    chosen = dataclasses.replace(request.format or spec.format, gzip=False)
    try:
        output, table = render_table(layout, rows, chosen, max_chars=PREVIEW_MAX_CHARS)
    except OutputTooLargeError as exc:
        problem = FieldProblem(
            "layout", "TOO_LARGE", f"{exc}: preview fewer rows, or a layout with fewer columns"
        )
        raise InvalidArgumentError(f"preview: {problem.message}", [problem]) from exc
    return PreviewResult(
        output, media_type(chosen), layout.headers, table, layout.problems.summary()
    )
