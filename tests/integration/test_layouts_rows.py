"""The COPY-based row reader: exact values, ranges, order, early stops, the render path."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import asyncpg
import pytest

from services.common.db import create_pool
from services.common.layouts.catalog import ROW_FIELDS
from services.common.layouts.compiler import compile_layout
from services.common.layouts.model import Column, LayoutSpec
from services.common.layouts.render import render_columns
from services.common.referral_rows import QUERIES, ReferralRowReader
from tests.integration.layouts_support import create_account, insert_referrals

pytestmark = pytest.mark.integration

HOSTILE_TEXT = 'tab\there "quoted" back\\slash\nnew line\r\nCRLF zoë 東京 🙂'


async def test_row_queries_select_exactly_the_catalogs_row_fields(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        for name in ("referral_rows_in_range", "latest_referral_rows"):
            statement = await conn.prepare(QUERIES[name])
            assert tuple(a.name for a in statement.get_attributes()) == ROW_FIELDS


async def test_values_arrive_exactly_as_stored(pool: asyncpg.Pool) -> None:
    account_id, campaign_id = await create_account(pool)
    opted = datetime(2024, 7, 1, 12, 30, 5, 123456, tzinfo=UTC)
    extra = {"note": HOSTILE_TEXT, "q1": "yes"}
    (seq,) = await insert_referrals(
        pool,
        account_id,
        campaign_id,
        [
            {
                "ad_text": HOSTILE_TEXT,
                "opted_in_at": opted,
                "date_of_birth": None,
                "ip_address": None,
                "extra": extra,
            }
        ],
    )
    rows = await ReferralRowReader(pool).latest_rows(account_id, 10)
    (row,) = rows
    value = dict(zip(ROW_FIELDS, row, strict=True))
    assert value["seq"] == str(seq)
    assert value["account_id"] == str(account_id)
    assert value["ad_text"] == HOSTILE_TEXT
    assert value["opted_in_at"] == "2024-07-01 12:30:05.123456+00"
    assert (value["date_of_birth"], value["ip_address"]) == ("", "")
    assert json.loads(value["extra"]) == extra


async def test_rows_in_range_filter_by_account_range_and_campaign_in_seq_order(
    pool: asyncpg.Pool,
) -> None:
    account_id, campaign_a = await create_account(pool)
    other_account, other_campaign = await create_account(pool)
    campaign_b = (await create_account(pool))[1]
    await pool.execute("UPDATE campaigns SET account_id = $1 WHERE id = $2", account_id, campaign_b)
    seqs = []
    for i in range(6):
        campaign = campaign_a if i % 2 else campaign_b
        seqs += await insert_referrals(pool, account_id, campaign, [{"first_name": f"n{i}"}])
        await insert_referrals(pool, other_account, other_campaign, [{}])
    reader = ReferralRowReader(pool)

    async def names(after: int, through: int, *campaigns: object) -> list[str]:
        found: list[str] = []
        index = ROW_FIELDS.index("first_name")
        chosen = list(campaigns) if campaigns else None
        async for batch in reader.rows_in_range(account_id, after, through, chosen):  # type: ignore[arg-type]
            found += batch[index]
        return found

    assert await names(0, seqs[-1]) == [f"n{i}" for i in range(6)]
    assert await names(seqs[1], seqs[4]) == ["n2", "n3", "n4"]
    assert await names(0, seqs[-1], campaign_a) == ["n1", "n3", "n5"]
    assert await names(0, seqs[-1], campaign_a, campaign_b) == [f"n{i}" for i in range(6)]
    assert await names(0, seqs[-1], other_campaign) == []  # another account's campaign


async def test_stopping_early_leaves_the_pool_usable(database_url: str) -> None:
    async with create_pool(database_url, min_size=1, max_size=1) as pool:
        account_id, campaign_id = await create_account(pool)
        await pool.execute(
            """INSERT INTO referrals (account_id, campaign_id, partner_referral_id, email,
                                      opted_in_at, ad_text)
               SELECT $1, $2, 'r' || g, 'u' || g || '@example.com', now(), repeat('x', 500)
                 FROM generate_series(1, 20000) g""",
            account_id,
            campaign_id,
        )
        batches = ReferralRowReader(pool).rows_in_range(account_id, 0, 10**12)
        first = await anext(batches)
        assert 0 < len(first[0]) < 20000
        await batches.aclose()
        assert await pool.fetchval("SELECT count(*) FROM referrals") == 20000


async def test_streamed_render_from_the_database(pool: asyncpg.Pool) -> None:
    account_id, campaign_id = await create_account(pool)
    await pool.execute(
        """INSERT INTO referrals (account_id, campaign_id, partner_referral_id, email,
                                  first_name, opted_in_at)
           SELECT $1, $2, 'r' || g, 'u' || g || '@example.com', 'Zoë ' || g,
                  timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second'
             FROM generate_series(1, 5000) g""",
        account_id,
        campaign_id,
    )
    reader = ReferralRowReader(pool)
    context = await reader.render_context(account_id)
    assert context is not None
    spec = LayoutSpec(
        (Column("name", "first_name"), Column("at", "opted_in_at"), Column("c", "campaign_name"))
    )
    layout = compile_layout(spec, {}, context)
    chunks = [c async for c in render_columns(layout, reader.rows_in_range(account_id, 0, 10**12))]
    lines = b"".join(chunks).decode().split("\r\n")
    assert lines[0] == "name,at,c"
    assert lines[1] == "Zoë 1,2024-01-01T00:00:01Z,Spring offer"
    assert lines[5000] == "Zoë 5000,2024-01-01T01:23:20Z,Spring offer"
    assert layout.rows_done == 5000
