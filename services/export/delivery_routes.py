"""The delivery history of the export API: list an account's deliveries, show one with
its attempts, download a file it sent again (checked against the recorded SHA-256 before a
byte goes out), and resend one through the scheduler's rules."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Any
from uuid import UUID

from aiohttp import web
from multidict import MultiDict

from services.common.auth.model import AccessRule
from services.common.errors import NotFoundError
from services.common.paging import fetch_page, page_size
from services.delivery.delivery_files import DeliveryFilesPg
from services.delivery.parts import RowCount
from services.export.audit import AuditLog
from services.export.caller_routes import Route, caller_account, time_id_before
from services.export.delivery_store import (
    Attempt,
    DeliveryFilter,
    DeliveryHistoryPg,
    DeliveryRecord,
)
from services.export.params import Params, interval
from services.export.redownload import (
    Redownload,
    check_reproduced,
    file_headers,
    gone,
    plan_redownload,
    sha256_of,
)
from services.export.streams import StreamSlots
from services.scheduler.tasks import rules
from services.scheduler.tasks.store import TaskStorePg

READ = AccessRule(scope="deliveries:read")
WRITE = AccessRule(scope="deliveries:write")
STATES = ("issued", "running", "retrying", "succeeded", "dead")
PURPOSES = ("scheduled", "resend", "redeliver")
LIST_PARAMS = (
    "task_id", "connection_id", "state", "purpose", "from", "to", "time_zone", "page_size",
    "page_token",
)  # fmt: skip
PREFIX = "/v1/deliveries"


def _at(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def delivery_document(record: DeliveryRecord) -> dict[str, Any]:
    """A delivery as the API shows it."""
    d = record.delivery
    snapshot = d.layout
    layout = None
    if snapshot is not None:
        layout = {
            "layout_id": str(snapshot["layout_id"]) if snapshot.get("layout_id") else None,
            "layout_version": int(snapshot.get("layout_version") or 0),
            "custom_field_versions": {
                name: int(field.get("version") or 0)
                for name, field in snapshot.get("custom_fields", {}).items()
            },
        }
    frame = record.frame
    return {
        "id": str(d.id),
        "task_id": str(d.task_id),
        "connection_id": str(record.connection_id),
        "purpose": d.purpose,
        "state": d.state,
        "after_seq": d.after_seq,
        "through_seq": d.through_seq,
        "time_frame": None
        if frame is None
        else {"field": frame.field, "from": _at(frame.start), "to": _at(frame.end)},
        "reserved_at": _at(d.reserved_at),
        "finished_at": _at(d.finished_at),
        "attempts": d.attempts,
        "rows": d.rows,
        "bytes": d.bytes,
        "suppressed": d.suppressed or 0,
        "files": [
            {
                "index": i,
                "path": f.path,
                "rows": f.rows,
                "bytes": f.bytes,
                "sha256": f.sha256,
                "download_url": f"{PREFIX}/{d.id}/files/{i}",
            }
            for i, f in enumerate(d.files, start=1)
        ],
        "error": d.error,
        "diagnosis": d.diagnosis,
        "resend_of": str(d.resend_of) if d.resend_of else None,
        "layout": layout,
    }


def attempt_document(attempt: Attempt) -> dict[str, Any]:
    """One attempt as the API shows it."""
    return {
        "attempt": attempt.attempt,
        "started_at": _at(attempt.started_at),
        "finished_at": _at(attempt.finished_at),
        "outcome": attempt.outcome,
        "error": attempt.error,
        "diagnosis": attempt.diagnosis,
    }


def _delivery_id(request: web.Request) -> UUID:
    params = Params(MultiDict(request.match_info), ("delivery_id", "index"))
    found = params.uuid("delivery_id")
    params.done()
    assert found is not None  # the route's pattern always has it
    return found


def _index(request: web.Request) -> int:
    params = Params(MultiDict(request.match_info), ("delivery_id", "index"))
    found = params.integer("index", low=1, high=10**6)
    params.done()
    assert found is not None
    return found


class DeliveryRoutes:
    """The handlers of /v1/deliveries."""

    def __init__(
        self,
        history: DeliveryHistoryPg,
        tasks: TaskStorePg,
        files: DeliveryFilesPg,
        audit: AuditLog,
        *,
        slots: StreamSlots | None = None,
    ) -> None:
        self._slots = slots or StreamSlots(4)
        self._history = history
        self._tasks = tasks
        self._files = files
        self._audit = audit

    async def list_deliveries(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/deliveries: the account's deliveries, newest first."""
        account = caller_account()
        params = Params(request.query, LIST_PARAMS)
        task_id = params.uuid("task_id")
        connection_id = params.uuid("connection_id")
        state = params.text("state", choices=STATES) or None
        purpose = params.text("purpose", choices=PURPOSES) or None
        frame = interval(params, params.zone("time_zone"))
        size = params.integer("page_size", low=1, high=1000)
        token = params.text("page_token")
        params.done()
        before = time_id_before(token)
        if task_id is not None and await self._tasks.get_task(account, task_id) is None:
            raise NotFoundError(f"task {task_id} does not exist")
        if connection_id is not None and not await self._tasks.connection_exists(
            account, connection_id
        ):
            raise NotFoundError(f"connection {connection_id} does not exist")
        wanted = DeliveryFilter(task_id, connection_id, state, purpose, frame.start, frame.end)
        page = await fetch_page(
            lambda limit: self._history.page(account, wanted, before, limit),
            page_size(size or 0),
            lambda r: f"{r.delivery.reserved_at.isoformat()}|{r.delivery.id}",
        )
        return web.json_response(
            {
                "items": [delivery_document(r) for r in page.items],
                "next_page_token": page.next_token,
            }
        )

    async def _record(self, account: UUID, delivery_id: UUID) -> DeliveryRecord:
        found = await self._history.get(account, delivery_id)
        if found is None:
            raise NotFoundError(f"delivery {delivery_id} does not exist")
        return found

    async def get_delivery(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/deliveries/{delivery_id}: one delivery with its attempts."""
        account = caller_account()
        Params(request.query, ()).done()
        record = await self._record(account, _delivery_id(request))
        document = delivery_document(record)
        attempts = await self._history.attempts(record.delivery.id)
        document["attempt_log"] = [attempt_document(a) for a in attempts]
        return web.json_response(document)

    async def resend(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/deliveries/{delivery_id}/resend: the scheduler's resend rules."""
        account = caller_account()
        Params(request.query, ()).done()
        delivery_id = _delivery_id(request)
        made = await rules.resend_delivery(self._tasks, str(account), str(delivery_id))
        record = await self._record(account, made.id)
        location = f"{PREFIX}/{made.id}"
        return web.json_response(
            delivery_document(record), status=202, headers={"Location": location}
        )

    async def _rendered(
        self, plan: Redownload, count: RowCount | None = None
    ) -> AsyncGenerator[bytes, None]:
        chunks = await self._files.part_of(plan.delivery_id, plan.index - 1, plan.max_rows, count)
        if chunks is None:
            raise gone(plan)
        return chunks

    async def download_file(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/deliveries/{delivery_id}/files/{index}: exactly the file it sent (in
        one of the process's stream slots, shared with exports)."""
        async with self._slots.slot():
            return await self._download_file(request)

    async def _download_file(self, request: web.Request) -> web.StreamResponse:
        account = caller_account()
        Params(request.query, ()).done()
        delivery_id, index = _delivery_id(request), _index(request)
        plan = plan_redownload(await self._record(account, delivery_id), index)
        # First render: only hashed (constant memory). Nothing is sent unless it matches.
        check_reproduced(plan, *await sha256_of(await self._rendered(plan)))
        count = RowCount()
        chunks = await self._rendered(plan, count)
        entry = await self._audit.begin(
            account, "redownload", {"delivery_id": str(delivery_id), "index": index}
        )
        response = web.StreamResponse(headers=file_headers(plan))
        response.content_length = plan.size
        outcome, sent = "failed", 0
        try:
            async with contextlib.aclosing(chunks):
                sent, verified = await _stream_verified(request, response, chunks, plan)
            if verified:
                await response.write_eof()
                outcome = "completed"
            else:
                # The rows changed between the two renders: the last chunk was held back,
                # so the client never gets a whole body; break the connection, no clean end.
                if request.transport is not None:
                    request.transport.abort()
        except ConnectionResetError:
            outcome = "aborted"
        except asyncio.CancelledError:  # a server cancelling handlers on hang-ups
            outcome = "aborted"
            raise
        finally:
            await self._audit.finish(entry, outcome, count.rows, sent)
        return response

    def routes(self) -> list[Route]:
        """The routes of this module with their access rules."""
        return [
            ("GET", PREFIX, self.list_deliveries, READ),
            ("GET", PREFIX + "/{delivery_id}", self.get_delivery, READ),
            ("GET", PREFIX + "/{delivery_id}/files/{index}", self.download_file, READ),
            ("POST", PREFIX + "/{delivery_id}/resend", self.resend, WRITE),
        ]


async def _stream_verified(
    request: web.Request,
    response: web.StreamResponse,
    chunks: AsyncGenerator[bytes, None],
    plan: Redownload,
) -> tuple[int, bool]:
    """Send the chunks, hashing them, holding the last one back until the whole stream is
    known to have the recorded size and SHA-256: (bytes sent, verified)."""
    digest = hashlib.sha256()
    total = sent = 0
    held = b""
    await response.prepare(request)
    async for chunk in chunks:
        if not chunk:
            continue
        digest.update(chunk)
        total += len(chunk)
        if total > plan.size:
            return sent, False
        if held:
            await response.write(held)
            sent += len(held)
        held = chunk
    if total != plan.size or digest.hexdigest() != plan.sha256:
        return sent, False
    if held:
        await response.write(held)
        sent += len(held)
    return sent, True
