"""What the export API reads about referrals: the pin of an export, pages, one referral.

Rows may come from a read replica (HANDOFF_EXPORT_REPLICA_URL); the pin always comes from
the primary, and the replica must have replayed the primary's WAL up to the pin before it
serves the rows, so an export or a page from the replica holds exactly what the primary
would have answered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg

from services.common.db import driver_errors, load_queries
from services.common.errors import UnavailableError
from services.common.referral_rows import TimeFrame
from services.common.referral_shape import COLUMNS

QUERIES = load_queries(Path(__file__).parent / "sql" / "referrals.sql")
REPLAY_WAIT_S = 5.0  # how long a lagging replica may take to catch up with a pin
_REPLAY_POLL_S = 0.02
BEFORE_ANY = 2**63 - 1  # "below this seq": every referral


def referral_document(record: asyncpg.Record) -> dict[str, Any]:
    """One referral as the API shows it: every column of the shape, typed for JSON
    (timestamps and dates ISO 8601, NULL as null), plus the campaign's name."""
    document: dict[str, Any] = {}
    for column in COLUMNS:
        value = record["ip_text"] if column.name == "ip_address" else record[column.name]
        if isinstance(value, datetime | date):
            value = value.isoformat()
        elif isinstance(value, UUID):
            value = str(value)
        document[column.name] = value
    document["campaign_name"] = record["campaign_name"]
    return document


class ReferralReads:
    """Reads over the primary (pins, audit) and a pool for rows (the replica, if any)."""

    def __init__(self, primary: asyncpg.Pool, rows: asyncpg.Pool | None = None) -> None:
        self._primary = primary
        self._rows = rows or primary

    @property
    def rows_pool(self) -> asyncpg.Pool:
        """The pool rows are read from."""
        return self._rows

    async def pin(self) -> int:
        """The safe watermark now, once the rows' server has replayed up to it."""
        with driver_errors("export pin"):
            record = await self._primary.fetchrow(QUERIES["pin"])
        watermark, lsn = int(record["watermark"]), str(record["lsn"])
        if self._rows is self._primary:
            return watermark
        deadline = time.monotonic() + REPLAY_WAIT_S
        while True:
            with driver_errors("export replica"):
                replayed = await self._rows.fetchval(QUERIES["replayed"], lsn)
            if replayed:
                return watermark
            if time.monotonic() > deadline:
                raise UnavailableError(
                    f"the read replica is more than {REPLAY_WAIT_S:.0f} s behind"
                )
            await asyncio.sleep(_REPLAY_POLL_S)

    async def page(
        self,
        account_id: UUID,
        watermark: int,
        before_seq: int,
        campaign_ids: Sequence[UUID] | None,
        frame: TimeFrame | None,
        partner_referral_id: str | None,
        limit: int,
    ) -> list[asyncpg.Record]:
        """Up to `limit` referrals below `before_seq`, newest first."""
        field, start, end = (frame.field, frame.start, frame.end) if frame else (None, None, None)
        campaigns = None if campaign_ids is None else list(campaign_ids)
        args = (account_id, watermark, before_seq, campaigns, field, start, end)
        with driver_errors("page referrals"):
            records = await self._rows.fetch(
                QUERIES["page_referrals"], *args, partner_referral_id, limit
            )
        return list(records)

    async def get(self, account_id: UUID, seq: int) -> asyncpg.Record | None:
        """The account's referral `seq`, or None."""
        with driver_errors("get referral"):
            record: asyncpg.Record | None = await self._rows.fetchrow(
                QUERIES["get_referral"], account_id, seq
            )
        return record

    async def unknown_campaigns(self, account_id: UUID, ids: Sequence[UUID]) -> list[UUID]:
        """Those of `ids` that are not campaigns of the account."""
        if not ids:
            return []
        with driver_errors("campaigns of"):
            found = {
                r["id"]
                for r in await self._primary.fetch(QUERIES["campaigns_of"], account_id, list(ids))
            }
        return [i for i in ids if i not in found]
