"""Referrals on the export API: the streamed export, and browsing page by page.

`GET /v1/referrals/export` renders the account's referrals through a layout as CSV, JSON
Lines or JSON, streamed as PostgreSQL produces them (constant memory at any size), gzip
when the client accepts it. Every export is pinned to the safe watermark at its start
(`Handoff-Through-Seq`), so the same request with that `through_seq` gives the same bytes
while the layout is unchanged (the `ETag` says which); `offset` then resumes a broken
download at a byte, and `If-Match` refuses when the layout changed in between.

`GET /v1/referrals` pages the account's referrals newest first (stable while referrals
arrive: a page never shows what a previous page could not have), `GET /v1/referrals/{seq}`
shows one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from aiohttp import web

from services.common.auth.model import AccessRule
from services.common.errors import NotFoundError
from services.common.layouts.compiler import RenderContext, compile_layout
from services.common.layouts.formats import file_extension, media_type
from services.common.layouts.model import (
    CsvFormat,
    CustomFieldSpec,
    JsonArrayFormat,
    JsonLinesFormat,
    OutputFormat,
)
from services.common.layouts.pg_csv import CopyCsvFinisher, pg_csv_chunks, pg_csv_plan
from services.common.layouts.render import render_columns
from services.common.paging import decode_token, fetch_page, invalid_token, page_size
from services.common.referral_rows import ReferralRowReader, TimeFrame
from services.export.audit import AuditLog
from services.export.caller_routes import Route, caller_account
from services.export.params import Interval, Params, interval
from services.export.problems import problem_response
from services.export.referral_store import BEFORE_ANY, ReferralReads, referral_document
from services.export.streams import StreamSlots, send_stream
from services.scheduler.layouts.model import SavedLayout
from services.scheduler.layouts.rules import default_layout, get_layout
from services.scheduler.layouts.store import LayoutStorePg

EXPORT_PATH = "/v1/referrals/export"
READ = AccessRule(scope="referrals:read")
EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
FORMATS = ("csv", "jsonl", "json")
_FRAME = ("from", "to", "time_zone", "by", "campaign_id")
EXPORT_PARAMS = (*_FRAME, "after_seq", "through_seq", "offset", "layout_id", "format")
PAGE_PARAMS = (*_FRAME, "partner_referral_id", "page_size", "page_token")


@dataclass(frozen=True)
class Selection:
    """Which referrals of the account: (after_seq, through_seq], campaigns, time frame."""

    account_id: UUID
    after_seq: int
    through_seq: int
    campaign_ids: tuple[UUID, ...] | None
    frame: TimeFrame | None


def _frame(span: Interval, by: str) -> TimeFrame | None:
    if span.start is None and span.end is None:
        return None
    return TimeFrame(span.start or EARLIEST, span.end or LATEST, by)


def _output_format(saved: OutputFormat, wanted: str) -> OutputFormat:
    """The layout's format, or the one asked for; compression is HTTP's (never the body's)."""
    body = saved.body
    if wanted == "csv" and not isinstance(body, CsvFormat):
        body = CsvFormat()
    elif wanted == "jsonl" and not isinstance(body, JsonLinesFormat):
        body = JsonLinesFormat(getattr(body, "empty_as_null", False))
    elif wanted == "json" and not isinstance(body, JsonArrayFormat):
        body = JsonArrayFormat(getattr(body, "empty_as_null", False))
    return OutputFormat(body=body, gzip=False)


def _file_name(span: Interval, zone: str, fmt: OutputFormat) -> str:
    def day(at: datetime | None) -> str:
        return "" if at is None else at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")

    frame = f"{day(span.start) or 'start'}-{day(span.end) or 'now'}"
    return f"referrals-{frame}{file_extension(fmt)}"


def _etag(selection: Selection, layout: SavedLayout, fmt: OutputFormat) -> str:
    """A strong validator of the export's bytes: the same selection, layout version and
    format render the same bytes."""
    frame = selection.frame
    material = json.dumps(
        [
            str(selection.account_id), selection.after_seq, selection.through_seq,
            sorted(map(str, selection.campaign_ids or ())),
            [frame.field, frame.start.isoformat(), frame.end.isoformat()] if frame else None,
            str(layout.id), layout.version, repr(fmt),
        ]
    )  # fmt: skip
    return '"' + hashlib.sha256(material.encode()).hexdigest()[:32] + '"'


async def _skipped(chunks: AsyncGenerator[bytes, None], offset: int) -> AsyncGenerator[bytes, None]:
    """The chunks without their first `offset` bytes (closing it closes them)."""
    async with contextlib.aclosing(chunks):
        async for chunk in chunks:
            if offset >= len(chunk):
                offset -= len(chunk)
                continue
            yield chunk[offset:] if offset else chunk
            offset = 0


def _accepts_gzip(request: web.Request) -> bool:
    for coding in request.headers.get("Accept-Encoding", "").split(","):
        name, _, params = coding.strip().partition(";")
        if name.strip().lower() in ("gzip", "x-gzip"):
            q = params.strip().removeprefix("q=")
            return not q.startswith("0") or q.strip("0.") != ""
    return False


class ReferralRoutes:
    """The handlers of the referral routes."""

    def __init__(
        self,
        reads: ReferralReads,
        layouts: LayoutStorePg,
        audit: AuditLog,
        *,
        slots: StreamSlots | None = None,
    ) -> None:
        self._slots = slots or StreamSlots(4)
        self._reads = reads
        self._rows = ReferralRowReader(reads.rows_pool)
        self._layouts = layouts
        self._audit = audit

    def routes(self) -> list[Route]:
        """The routes with their access rules (export before {seq}: both are under it)."""
        return [
            ("GET", EXPORT_PATH, self.export, READ),
            ("GET", "/v1/referrals", self.page, READ),
            ("GET", r"/v1/referrals/{seq:\d{1,19}}", self.one, READ),
        ]

    async def _campaigns(self, account: UUID, ids: list[UUID]) -> tuple[UUID, ...] | None:
        unknown = await self._reads.unknown_campaigns(account, ids)
        if unknown:
            raise NotFoundError(
                f"campaign_id: campaign {unknown[0]} does not exist in this account"
            )
        return tuple(ids) if ids else None

    async def _layout(self, account: UUID, layout_id: UUID | None) -> SavedLayout:
        try:
            if layout_id is None:
                return await default_layout(self._layouts, str(account))
            return await get_layout(self._layouts, str(account), str(layout_id))
        except NotFoundError as error:
            raise NotFoundError(f"layout_id: {error.message}") from error

    async def export(self, request: web.Request) -> web.StreamResponse:
        """Stream the selection through the layout (in one of the process's slots)."""
        async with self._slots.slot():
            return await self._export(request)

    async def _export(self, request: web.Request) -> web.StreamResponse:
        account = caller_account()
        p = Params(request.query, EXPORT_PARAMS)
        zone = p.zone("time_zone")
        span = interval(p, zone)
        by = p.text("by", "received_at", ("received_at", "opted_in_at"))
        campaign_ids = p.uuids("campaign_id")
        after = p.integer("after_seq") or 0
        through = p.integer("through_seq")
        offset = p.integer("offset") or 0
        layout_id = p.uuid("layout_id")
        wanted = p.text("format", "", FORMATS)
        if through is not None and through < after:
            p.refuse("through_seq", "OUT_OF_RANGE", "must not be below after_seq")
        if offset and through is None:
            p.refuse(
                "offset", "NEEDS_THROUGH_SEQ",
                "needs through_seq (the Handoff-Through-Seq of the first response), "
                "so that the rows are the same",
            )  # fmt: skip
        p.done()
        campaigns = await self._campaigns(account, campaign_ids)
        saved = await self._layout(account, layout_id)
        watermark = await self._reads.pin()
        selection = Selection(
            account, after, min(watermark, through if through is not None else watermark),
            campaigns, _frame(span, by),
        )  # fmt: skip
        fmt = _output_format(saved.spec.format, wanted)
        etag = _etag(selection, saved, fmt)
        expected = request.headers.get("If-Match")
        if expected is not None and expected.strip() not in (etag, "*"):
            return problem_response(
                412, "the export changed since (its layout or selection): export again from "
                f"the start; it is now {etag}", instance=request.path,
            )  # fmt: skip
        customs = {f.spec.name: f.spec for f in await self._layouts.custom_fields(account)}
        context = await self._rows.render_context(account) or RenderContext()
        filters = {
            "from": span.start.isoformat() if span.start else None,
            "to": span.end.isoformat() if span.end else None,
            "by": by, "campaign_ids": [str(c) for c in campaigns or ()],
            "after_seq": after, "through_seq": selection.through_seq, "offset": offset,
            "layout_id": str(saved.id) if saved.id else None, "layout_version": saved.version,
            "format": wanted or "layout",
        }  # fmt: skip
        entry = await self._audit.begin(account, "export", filters)
        response = web.StreamResponse(
            headers={
                "Content-Type": media_type(fmt),
                "Content-Disposition": (
                    f'attachment; filename="{_file_name(span, zone.key, fmt)}"'
                ),
                "ETag": etag,
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
                "Handoff-Through-Seq": str(selection.through_seq),
                "Handoff-Offset": str(offset),
            }
        )
        if _accepts_gzip(request):
            response.enable_compression(web.ContentCoding.gzip)
        chunks, rows_done = self._chunks(selection, saved, customs, context, fmt)
        finished = False

        async def completed(sent: int) -> None:
            nonlocal finished
            await self._audit.finish(entry, "completed", rows_done(), sent)
            finished = True

        outcome, sent = "failed", 0
        try:
            outcome, sent = await send_stream(
                request, response, _skipped(chunks, offset), completed
            )
        finally:
            if not finished:
                await self._audit.finish(entry, outcome, rows_done(), sent)
        return response

    def _chunks(
        self,
        selection: Selection,
        saved: SavedLayout,
        customs: dict[str, CustomFieldSpec],
        context: RenderContext,
        fmt: OutputFormat,
    ) -> tuple[AsyncGenerator[bytes, None], Callable[[], int]]:
        """The export's bytes, from PostgreSQL's renderer when it can render the layout
        (byte-identical), else from Python's; and how many rows went out so far."""
        plan = pg_csv_plan(saved.spec, fmt, customs)
        if plan is not None:
            finisher = CopyCsvFinisher(plan.csv, plan.columns)
            rendered = pg_csv_chunks(
                self._reads.rows_pool, plan, context, selection.account_id,
                selection.after_seq, selection.through_seq, selection.campaign_ids,
                selection.frame, finisher,
            )  # fmt: skip
            return rendered, lambda: finisher.records
        layout = compile_layout(saved.spec, customs, context)
        batches = self._rows.rows_in_range(
            selection.account_id, selection.after_seq, selection.through_seq,
            selection.campaign_ids, layout.row_fields, selection.frame,
        )  # fmt: skip

        async def chunks() -> AsyncGenerator[bytes, None]:
            async with contextlib.aclosing(batches):
                async for chunk in render_columns(layout, batches, fmt):
                    yield chunk

        return chunks(), lambda: layout.rows_done

    async def page(self, request: web.Request) -> web.StreamResponse:
        """A page of referrals, newest first."""
        account = caller_account()
        p = Params(request.query, PAGE_PARAMS)
        zone = p.zone("time_zone")
        span = interval(p, zone)
        by = p.text("by", "received_at", ("received_at", "opted_in_at"))
        campaign_ids = p.uuids("campaign_id")
        partner_id = p.text("partner_referral_id") or None
        size = p.integer("page_size", low=1, high=1000) or 0
        token = p.text("page_token")
        p.done()
        position = decode_token(token)
        try:
            watermark_text, _, before_text = position.partition(":") if position else ("", "", "")
            pinned = int(watermark_text) if position else None
            before = int(before_text) if position else BEFORE_ANY
        except ValueError as exc:
            raise invalid_token() from exc
        if not 0 <= (pinned or 0) < BEFORE_ANY or not 0 <= before <= BEFORE_ANY:
            raise invalid_token()
        campaigns = await self._campaigns(account, campaign_ids)
        # The first page pins the watermark; later pages keep it, so that pages are of
        # one snapshot of committed referrals whatever arrives meanwhile.
        watermark = pinned if pinned is not None else await self._reads.pin()
        frame = _frame(span, by)
        page = await fetch_page(
            lambda limit: self._reads.page(
                account, watermark, before, campaigns, frame, partner_id, limit
            ),
            page_size(size),
            lambda record: f"{watermark}:{record['seq']}",
        )
        return web.json_response(
            {
                "items": [referral_document(r) for r in page.items],
                "next_page_token": page.next_token,
                "through_seq": watermark,
            },
            headers={"Cache-Control": "no-store"},
        )

    async def one(self, request: web.Request) -> web.StreamResponse:
        """One referral of the account by its seq."""
        account = caller_account()
        Params(request.query, ()).done()
        seq = int(request.match_info["seq"])
        record = await self._reads.get(account, seq) if seq < BEFORE_ANY else None
        if record is None:
            raise NotFoundError(f"referral {seq} does not exist in this account")
        return web.json_response(referral_document(record), headers={"Cache-Control": "no-store"})
