"""The audit log of the export API: who exported or downloaded what, when, and how much.

An entry is begun before the first byte of a stream is sent (so a database that cannot
take it refuses the export, instead of an export nobody recorded) and finished when the
stream ends, with the rows and bytes actually sent and whether the client got all of it.
Entries are always written on the primary, whichever database the rows came from.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg

from services.common.auth.context import caller, current_request_id
from services.common.db import driver_errors, load_queries

QUERIES = load_queries(Path(__file__).parent / "sql" / "audit.sql")
ACTIONS = ("export", "redownload", "link_download")
OUTCOMES = ("streaming", "completed", "aborted", "failed")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditEntry:
    """One recorded export or download."""

    id: UUID
    credential_id: UUID | None
    action: str
    filters: dict[str, Any]
    request_id: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    rows: int | None
    bytes: int | None

    def document(self) -> dict[str, Any]:
        """The entry as the API shows it."""
        return {
            "id": str(self.id),
            "credential_id": str(self.credential_id) if self.credential_id else None,
            "action": self.action,
            "filters": self.filters,
            "request_id": self.request_id,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "outcome": self.outcome,
            "rows": self.rows,
            "bytes": self.bytes,
        }


def _entry(record: asyncpg.Record) -> AuditEntry:
    return AuditEntry(
        id=record["id"], credential_id=record["credential_id"], action=record["action"],
        filters=record["filters"], request_id=record["request_id"],
        started_at=record["started_at"], finished_at=record["finished_at"],
        outcome=record["outcome"], rows=record["rows"], bytes=record["bytes"],
    )  # fmt: skip


class AuditLog:
    """Writes and reads audit entries on the primary's pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def begin(
        self, account_id: UUID, action: str, filters: dict[str, Any], *, by_link: bool = False
    ) -> UUID:
        """Record the start of a stream for the current caller (None for a signed link);
        `filters` holds JSON values only (text, numbers, lists of them)."""
        entry = uuid.uuid4()
        credential = None if by_link else caller().credential_id
        with driver_errors("audit begin"):
            await self._pool.execute(
                QUERIES["begin_entry"], entry, account_id, credential, action,
                filters, current_request_id.get(),
            )  # fmt: skip
        return entry

    async def finish(self, entry: UUID, outcome: str, rows: int, size: int) -> None:
        """Record how the stream ended. Shielded: a client that hangs up cancels the
        handler, and the entry must still say what was sent. Never raises (the stream is
        over either way); a failure is logged."""
        try:
            await asyncio.shield(
                self._pool.execute(QUERIES["finish_entry"], entry, outcome, rows, size)
            )
        except (asyncio.CancelledError, Exception):  # the shielded write goes on
            log.warning("audit entry %s not finished (%s)", entry, outcome)

    async def page(
        self,
        account_id: UUID,
        action: str | None,
        start: datetime | None,
        end: datetime | None,
        before: tuple[datetime, UUID] | None,
        limit: int,
    ) -> list[AuditEntry]:
        """The account's entries, newest first."""
        at, last = before if before is not None else (None, None)
        with driver_errors("audit page"):
            records = await self._pool.fetch(
                QUERIES["page_entries"], account_id, action, start, end, at, last, limit
            )
        return [_entry(r) for r in records]
