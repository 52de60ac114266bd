"""The only code in ingest that runs SQL: referrals, the watermark, accounts, campaigns."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg

from services.common.db import POOL_ACQUIRE_TIMEOUT_S, driver_errors, load_queries
from services.ingest.extension import SCANNER
from services.ingest.model import (
    REFERRAL_COLUMNS,
    Account,
    Campaign,
    ReferralRow,
    Status,
    StoredRow,
)

QUERIES = load_queries(Path(__file__).parent / "sql" / "queries.sql")
NOTIFY_CHANNEL = "referrals_ingested"

# Up to this many rows one statement is cheaper than COPY's extra round trips.
SMALL_BATCH = 64
# Every column but extra, which is JSON already, and a C-level getter of their values.
_PLAIN_COLUMNS = tuple(name for name in REFERRAL_COLUMNS if name != "extra")
_plain_values = itemgetter(*(REFERRAL_COLUMNS.index(name) for name in _PLAIN_COLUMNS))
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_COPY_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))

ReferralKey = tuple[str, str]  # (account id, partner referral id)


def _number_lines(seqs: list[int], lines: list[bytes]) -> bytes:
    """COPY text lines, each after its seq and a tab (the C version is _scan.number_lines)."""
    return b"".join(map(b"%d\t%b".__mod__, zip(seqs, lines, strict=True)))


number_lines: Callable[[list[int], list[bytes]], bytes] = (
    _number_lines if SCANNER is None else SCANNER.number_lines
)

_new_stored = partial(tuple.__new__, StoredRow)  # StoredRow((seq, duplicate)), at C speed
DEADLOCK_ATTEMPTS = 3  # tries of the staged insert that may end in a deadlock


class _NotDirectError(Exception):
    """The direct path does not apply: roll it back and take the staged path."""


@dataclass(frozen=True, slots=True)
class CampaignState:
    """A campaign's status together with its account's."""

    campaign_id: UUID
    account_id: UUID
    status: Status
    account_status: Status


def json_rows(rows: Sequence[ReferralRow]) -> str:
    """The rows as a JSON array of column-keyed objects (for insert_referrals)."""
    # `extra` is JSON already: splice it in rather than decode and encode it again.
    objects = [
        _JSON.encode(dict(zip(_PLAIN_COLUMNS, _plain_values(row), strict=True)))[:-1]
        + ',"extra":'
        + row.extra
        + "}"
        for row in rows
    ]
    return "[" + ",".join(objects) + "]"


def copy_text(rows: Sequence[ReferralRow]) -> bytes:
    """The rows in COPY text format: tab-separated, \\N for NULL, specials escaped.

    Validated values hold no control characters but tab, newline and carriage return
    (multi-line fields), so \\x00-\\x02 serve as stand-ins while escaping the whole
    body at once, which is far faster than escaping field by field.
    """
    body = "\x02".join(
        "\x00".join(["\x01" if value is None else value for value in row]) for row in rows
    )
    for special, escaped in _COPY_ESCAPES:
        if special in body:
            body = body.replace(special, escaped)
    return (body.replace("\x00", "\t").replace("\x01", "\\N").replace("\x02", "\n") + "\n").encode()


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    # An async source: asyncpg reads file objects in a thread pool, which costs more than
    # the COPY itself for small batches.
    yield data


def _account(record: asyncpg.Record) -> Account:
    return Account(
        id=record["id"],
        name=record["name"],
        time_zone=record["time_zone"],
        status=Status(record["status"]),
        created_at=record["created_at"],
        archived_at=record["archived_at"],
    )


def _campaign(record: asyncpg.Record) -> Campaign:
    return Campaign(
        id=record["id"],
        account_id=record["account_id"],
        name=record["name"],
        status=Status(record["status"]),
        created_at=record["created_at"],
        archived_at=record["archived_at"],
    )


class IngestStore:
    """Referral and account persistence over an asyncpg pool.

    Given one connection instead, every call runs on it, inside whatever transaction
    the caller holds open there.
    """

    def __init__(
        self,
        pool: asyncpg.Pool | asyncpg.Connection,
        *,
        acquire_timeout_s: float = POOL_ACQUIRE_TIMEOUT_S,
    ) -> None:
        self._pool = pool
        self._acquire_timeout_s = acquire_timeout_s

    async def _fetch(self, name: str, *args: Any) -> list[asyncpg.Record]:
        with driver_errors(name):
            async with self._connection() as conn:
                return list(await conn.fetch(QUERIES[name], *args))

    async def insert_referrals(self, rows: Sequence[ReferralRow]) -> dict[ReferralKey, StoredRow]:
        """Store rows of active campaigns; answer each stored or pre-existing row by key.

        Rows missing from the answer were refused because of their campaign or account.
        """
        if not rows:
            return {}
        keys = [(r.account_id, r.partner_referral_id) for r in rows]
        if len(rows) > SMALL_BATCH:
            lines = [copy_text([row]) for row in rows]
            return await self.insert_copy(lines, keys, [r.campaign_id for r in rows])
        with driver_errors("insert_referrals"):
            async with self._connection() as conn:
                (record,) = await conn.fetch(QUERIES["insert_referrals"], json_rows(rows))
        return await self._with_existing(record, keys)

    async def insert_copy(
        self, lines: Sequence[bytes], keys: Sequence[ReferralKey], campaign_ids: Sequence[str]
    ) -> dict[ReferralKey, StoredRow]:
        """insert_referrals for rows given as COPY text lines, with each row's key and campaign.

        Rows go in key order, so that concurrent batches sharing keys lock them in one
        order; a deadlock, should one happen anyway, is retried.

        First the direct path: seqs drawn up front and the rows copied straight into the
        table, as fast as a plain COPY. It needs every campaign active and every key new;
        when it meets a stored key (a retried batch) it rolls back, and the staged path
        (COPY to a temporary table, then INSERT ... ON CONFLICT DO NOTHING) decides.
        """
        if not keys:
            return {}
        order = sorted(range(len(keys)), key=keys.__getitem__)
        if order != list(range(len(keys))):
            lines = [lines[i] for i in order]
            keys = [keys[i] for i in order]
            campaign_ids = [campaign_ids[i] for i in order]
        # A deadlock that outlasts its retries comes out retryable: UNAVAILABLE, not INTERNAL.
        with driver_errors("insert_staged_referrals"):
            async with self._connection() as conn:
                direct = await self._insert_direct(conn, lines, keys, campaign_ids)
                if direct is not None:
                    return direct
                record = await self._insert_staged(conn, b"".join(lines), list(set(campaign_ids)))
        return await self._with_existing(record, keys)

    async def _insert_direct(
        self,
        conn: asyncpg.Connection,
        lines: Sequence[bytes],
        keys: Sequence[ReferralKey],
        campaign_ids: Sequence[str],
    ) -> dict[ReferralKey, StoredRow] | None:
        """Every row stored by one COPY into referrals, or None when one could not be."""
        accounts = (key[0] for key in keys)
        pairs = {f"{c} {a}" for c, a in set(zip(campaign_ids, accounts, strict=True))}
        try:
            async with conn.transaction():
                active, seqs = await conn.fetchrow(
                    QUERIES["draw_referral_seqs"], list(set(campaign_ids)), len(lines)
                )
                if not pairs.issubset(active):
                    raise _NotDirectError
                data = number_lines(seqs, list(lines))
                await conn.copy_to_table(
                    "referrals", source=_chunks(data), columns=("seq", *REFERRAL_COLUMNS)
                )
                await conn.execute(QUERIES["notify_referrals_ingested"], seqs[-1])
        except (
            _NotDirectError,
            asyncpg.exceptions.UniqueViolationError,
            asyncpg.exceptions.DeadlockDetectedError,
        ):
            return None
        return dict(zip(keys, map(_new_stored, zip(seqs, repeat(False))), strict=False))

    async def _with_existing(
        self, inserted: asyncpg.Record, keys: Sequence[ReferralKey]
    ) -> dict[ReferralKey, StoredRow]:
        """Inserted rows by key, plus the stored ones among the keys that were not inserted."""
        seqs, accounts, partners = inserted
        result: dict[ReferralKey, StoredRow] = {}
        if seqs:
            # account_id comes back as text: it is only a dictionary key here.
            fresh = map(_new_stored, zip(seqs, repeat(False)))  # as long as seqs
            result = dict(zip(zip(accounts, partners, strict=True), fresh, strict=False))
        if len(result) == len(keys):
            return result
        missing = [key for key in keys if key not in result]
        # A fresh statement sees rows committed by concurrent callers we waited on.
        found = await self._fetch(
            "existing_referrals", [k[0] for k in missing], [k[1] for k in missing]
        )
        for rec in found:
            result[(str(rec["account_id"]), rec["partner_referral_id"])] = StoredRow(
                rec["seq"], True
            )
        return result

    def _connection(self) -> AbstractAsyncContextManager[asyncpg.Connection]:
        if isinstance(self._pool, asyncpg.Pool):
            return self._pool.acquire(timeout=self._acquire_timeout_s)  # type: ignore[no-any-return]
        return nullcontext(self._pool)

    async def _insert_staged(
        self, conn: asyncpg.Connection, data: bytes, campaign_ids: list[str]
    ) -> asyncpg.Record:
        """COPY rows into the connection's temporary staging table, then insert them.

        The staging table is made on a connection's first use: the first attempt fails,
        its transaction (or savepoint, inside a caller's transaction) rolls back, and the
        table is created before the next.
        """
        created = False
        deadlocks = 0
        while True:
            try:
                async with conn.transaction():
                    await conn.copy_to_table(
                        "referral_staging", source=_chunks(data), columns=REFERRAL_COLUMNS
                    )
                    return await conn.fetchrow(QUERIES["insert_staged_referrals"], campaign_ids)
            except asyncpg.exceptions.UndefinedTableError:
                if created:
                    raise
                created = True
                await conn.execute(QUERIES["create_referral_staging"])
            except asyncpg.exceptions.DeadlockDetectedError:
                deadlocks += 1
                if deadlocks >= DEADLOCK_ATTEMPTS:
                    raise

    async def campaign_states(self, campaign_ids: Sequence[UUID]) -> dict[UUID, CampaignState]:
        """Status of each known campaign (and its account) among `campaign_ids`."""
        records = await self._fetch("campaign_states", list(set(campaign_ids)))
        return {
            rec["id"]: CampaignState(
                campaign_id=rec["id"],
                account_id=rec["account_id"],
                status=Status(rec["status"]),
                account_status=Status(rec["account_status"]),
            )
            for rec in records
        }

    async def safe_watermark(self) -> int:
        """The highest seq below which no in-flight transaction can still commit."""
        records = await self._fetch("safe_watermark")
        return int(records[0][0])

    async def seqs_in_range(self, after: int, through: int) -> list[int]:
        """Stored seqs in (after, through], ascending."""
        return [rec["seq"] for rec in await self._fetch("referral_seqs_in_range", after, through)]

    async def insert_account(self, account_id: UUID, name: str, time_zone: str) -> Account | None:
        """Create an account; None when that id exists already."""
        records = await self._fetch("insert_account", account_id, name, time_zone)
        return _account(records[0]) if records else None

    async def get_account(self, account_id: UUID) -> Account | None:
        """The account, or None."""
        records = await self._fetch("get_account", account_id)
        return _account(records[0]) if records else None

    async def list_accounts(
        self, include_archived: bool, after: tuple[datetime, UUID] | None, limit: int
    ) -> list[Account]:
        """Accounts in creation order, after the given (created_at, id) position."""
        created, last_id = after if after else (None, None)
        records = await self._fetch("list_accounts", include_archived, created, last_id, limit)
        return [_account(r) for r in records]

    async def archive_account(self, account_id: UUID) -> Account | None:
        """Archive the account and its campaigns; None when unknown."""
        records = await self._fetch("archive_account", account_id)
        return _account(records[0]) if records else None

    async def insert_campaign(
        self, campaign_id: UUID, account_id: UUID, name: str
    ) -> Campaign | None:
        """Create a campaign; None when that id exists already."""
        records = await self._fetch("insert_campaign", campaign_id, account_id, name)
        return _campaign(records[0]) if records else None

    async def get_campaign(self, account_id: UUID, campaign_id: UUID) -> Campaign | None:
        """The account's campaign, or None (also when it belongs to another account)."""
        records = await self._fetch("get_campaign", campaign_id, account_id)
        return _campaign(records[0]) if records else None

    async def list_campaigns(
        self,
        account_id: UUID,
        include_archived: bool,
        after: tuple[datetime, UUID] | None,
        limit: int,
    ) -> list[Campaign]:
        """The account's campaigns in creation order, after the given position."""
        created, last_id = after if after else (None, None)
        records = await self._fetch(
            "list_campaigns", account_id, include_archived, created, last_id, limit
        )
        return [_campaign(r) for r in records]

    async def archive_campaign(self, account_id: UUID, campaign_id: UUID) -> Campaign | None:
        """Archive the campaign; None when the account has no such campaign."""
        records = await self._fetch("archive_campaign", campaign_id, account_id)
        return _campaign(records[0]) if records else None
