"""The PostgreSQL CSV renderer writes exactly the Python renderer's bytes, for every kind of
value, dialect and selection, streams in bounded chunks and stops cleanly."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest

from services.common.db import create_pool
from services.common.layouts.catalog import ROW_FIELDS
from services.common.layouts.compiler import RenderContext, compile_layout
from services.common.layouts.defaults import DEFAULT_LAYOUT
from services.common.layouts.model import (
    Column,
    CsvFormat,
    CustomFieldSpec,
    FormulaGuard,
    JsonArrayFormat,
    JsonLinesFormat,
    LayoutSpec,
    OutputFormat,
    Quoting,
    TemplateStep,
)
from services.common.layouts.pg_csv import CHUNK_BYTES, pg_csv_chunks, pg_csv_plan
from services.common.layouts.render import render_columns
from services.common.referral_rows import QUERIES, ReferralRowReader, TimeFrame
from tests.integration.layouts_support import create_account, insert_referrals

pytestmark = pytest.mark.integration

EVERY_FIELD = (*ROW_FIELDS, "campaign_name", "partner_name", "delivery_id", "delivery_time")
ALL_FIELDS = LayoutSpec(tuple(Column(name, name) for name in EVERY_FIELD))
HOSTILE = [
    "", " ", "plain", "=1+1", "+1", "-1", "@SUM(A1)", "\tTab", "\rCR", "-1.5e3", "+1.5e3",
    ".5", "-.5", "+1e", "-1\n", "-\u0661\u0662", "+\uff11", "-", "+", "=", "@", " =1",
    "'=1", "'", 'say "hi"', '"', '""', "a,b", "a;b", "a\tb", "a|b", "a\rb", "a\nb", "a\r\nb",
    "\n", "\r\n", "x\n", "\\", "\\\\", "a\\nb", "\\.", "\\N", "\\" * 999, "\t", "zoë", "東京",
    "🙂", "e\u0301", "\u200b", "\x01", "\x1f", "\x7f", "\b\f\v", "x" * 70_000, 'q"' * 5000,
    '\\."\n', "\\.\n\\.",
]  # fmt: skip


async def _python_bytes(
    pool: asyncpg.Pool,
    spec: LayoutSpec,
    fmt: OutputFormat | None,
    context: RenderContext,
    account_id: UUID,
    after: int = 0,
    through: int = 10**12,
    campaigns: Sequence[UUID] | None = None,
    frame: TimeFrame | None = None,
) -> bytes:
    layout = compile_layout(spec, {}, context)
    rows = ReferralRowReader(pool).rows_in_range(
        account_id, after, through, campaigns, layout.row_fields, frame
    )
    return b"".join([chunk async for chunk in render_columns(layout, rows, fmt)])


async def _pg_bytes(
    pool: asyncpg.Pool,
    spec: LayoutSpec,
    fmt: OutputFormat | None,
    context: RenderContext,
    account_id: UUID,
    after: int = 0,
    through: int = 10**12,
    campaigns: Sequence[UUID] | None = None,
    frame: TimeFrame | None = None,
) -> bytes:
    plan = pg_csv_plan(spec, fmt, {})
    assert plan is not None
    chunks = pg_csv_chunks(pool, plan, context, account_id, after, through, campaigns, frame)
    parts = [chunk async for chunk in chunks]
    assert all(parts)
    return b"".join(parts)


async def _assert_same(
    pool: asyncpg.Pool,
    spec: LayoutSpec,
    fmt: OutputFormat | None,
    context: RenderContext,
    account_id: UUID,
    **selection: Any,
) -> bytes:
    expected = await _python_bytes(pool, spec, fmt, context, account_id, **selection)
    got = await _pg_bytes(pool, spec, fmt, context, account_id, **selection)
    if got != expected:  # the first difference, readably
        at = next(
            (i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
            min(len(got), len(expected)),
        )
        raise AssertionError(
            f"{spec.formula_guard} {fmt}: differs at byte {at}: "
            f"pg {got[max(0, at - 60) : at + 60]!r} python {expected[max(0, at - 60) : at + 60]!r}"
        )
    return got


async def _hostile_account(pool: asyncpg.Pool) -> tuple[UUID, RenderContext, list[int]]:
    """An account with a campaign whose name needs quoting, one referral per hostile value
    (in most text fields), odd timestamps, dates, addresses and extras, and one referral of
    a campaign it does not know."""
    account_id, campaign_id = await create_account(pool, campaign='=Spring, "sale"\n\\.')
    rows: list[dict[str, Any]] = []
    for i, value in enumerate(HOSTILE):
        rows.append(
            {
                "partner_referral_id": f"{value}#{i}",
                "email": value,
                "title": value[:20],
                "first_name": value,
                "last_name": value[::-1],
                "city": value,
                "address_line2": value,
                "ad_text": value,
                "partner_id": value[:100],
                "user_agent": value,
                "extra": {"v": value},
                "opted_in_at": datetime(2024, 7, 1, 12, 30, 5, i * 1000 + 1, tzinfo=UTC),
                "date_of_birth": None if i % 3 == 0 else date(1900 + i, 1 + i % 12, 1),
                "ip_address": [None, "203.0.113.7", "2001:db8::1", "::ffff:1.2.3.4", "::1",
                               "10.0.0.0/8"][i % 6],
            }
        )  # fmt: skip
    seqs = await insert_referrals(pool, account_id, campaign_id, rows)
    seqs += await insert_referrals(pool, account_id, uuid4(), [{"first_name": "stray"}])
    odd = {
        "opted_in_at": ["-infinity", "infinity", "0044-03-15 10:00:00+00 BC",
                        "12345-06-07 08:09:10.5+00", "0005-01-01 00:00:00+00"],
        "received_at": ["2024-01-02 03:04:05.678901+00", "infinity", "-infinity",
                        "1999-12-31 23:59:59.999999+00", "0001-01-01 00:00:00+00"],
        "date_of_birth": ["-infinity", "infinity", "0044-03-15 BC", "12345-06-07",
                          "2000-02-29"],
        "extra": ['"=HYPERLINK(1)"', "-1", "[1, \"a,b\"]", "null", '{"k": "\\\\"}'],
    }  # fmt: skip
    for column, values in odd.items():
        for seq, value in zip(seqs[1:], values, strict=False):
            cast = {"date_of_birth": "date", "extra": "jsonb"}.get(column, "timestamptz")
            await pool.execute(
                f"UPDATE referrals SET {column} = $1::text::{cast} WHERE seq = $2", value, seq
            )
    context = await ReferralRowReader(pool).render_context(account_id)
    assert context is not None
    return account_id, context, seqs


def _formats() -> list[OutputFormat]:
    return [
        OutputFormat(CsvFormat(delimiter, quoting, header, ending, bom))
        for delimiter, quoting, header, ending, bom in itertools.product(
            (",", ";", "\t", "|"),
            (Quoting.MINIMAL, Quoting.ALL),
            (True, False),
            ("\r\n", "\n"),
            (False, True),
        )
    ]


@pytest.mark.parametrize("guard", list(FormulaGuard))
async def test_every_field_and_value_renders_as_the_python_path_does(
    pool: asyncpg.Pool, guard: FormulaGuard
) -> None:
    account_id, context, _ = await _hostile_account(pool)
    headers = ("=h", "a,b", 'q"h', "new\nline", "zoë")
    columns = tuple(
        Column(headers[i % len(headers)] + str(i), name) for i, name in enumerate(EVERY_FIELD)
    )
    spec = LayoutSpec(columns, formula_guard=guard)
    for fmt in _formats():
        await _assert_same(pool, spec, fmt, context, account_id)


async def test_context_fields_come_from_the_render_context(pool: asyncpg.Pool) -> None:
    account_id, context, _ = await _hostile_account(pool)
    others = [
        RenderContext(),  # no campaign known: every campaign name is ''
        RenderContext(
            campaign_names={**context.campaign_names, str(uuid4()): "other"},
            partner_names={"plain": '=Partner, "Fifteen"', "": "nobody"},
            delivery_id="=delivery,1",
            delivery_time=datetime(2024, 3, 10, 7, 30, 0, 500000, tzinfo=UTC),
        ),
        RenderContext(delivery_id="d-1", delivery_time=datetime(5, 1, 1, tzinfo=UTC)),
    ]
    for other, guard in itertools.product(others, FormulaGuard):
        spec = LayoutSpec(ALL_FIELDS.columns, formula_guard=guard)
        await _assert_same(pool, spec, None, other, account_id)


@pytest.mark.parametrize("field", ["first_name", "ad_text", "date_of_birth", "ip_address",
                                   "opted_in_at", "campaign_name", "seq"])  # fmt: skip
async def test_single_column_layouts_render_as_the_python_path_does(
    pool: asyncpg.Pool, field: str
) -> None:
    account_id, context, _ = await _hostile_account(pool)
    for guard, fmt in itertools.product(FormulaGuard, _formats()[::3]):
        spec = LayoutSpec((Column(field, field),), formula_guard=guard)
        await _assert_same(pool, spec, fmt, context, account_id)


async def test_a_lone_backslash_dot_stays_bare_in_a_single_column(pool: asyncpg.Pool) -> None:
    account_id, campaign_id = await create_account(pool)
    values = ["\\.", "\\.", "", "\\.", "a\n\\.", "\\.\n", "\\."]
    await insert_referrals(pool, account_id, campaign_id, [{"city": v} for v in values])
    spec = LayoutSpec((Column("City", "city"),))
    got = await _assert_same(pool, spec, None, RenderContext(), account_id)
    assert got == b'City\r\n\\.\r\n\\.\r\n""\r\n\\.\r\n"a\n\\."\r\n"\\.\n"\r\n\\.\r\n'


async def test_the_default_layout_renders_as_the_python_path_does(pool: asyncpg.Pool) -> None:
    account_id, context, _ = await _hostile_account(pool)
    for guard in FormulaGuard:
        spec = LayoutSpec(DEFAULT_LAYOUT.columns, formula_guard=guard)
        await _assert_same(pool, spec, None, context, account_id)
    await _assert_same(pool, DEFAULT_LAYOUT, DEFAULT_LAYOUT.format, context, account_id)


async def test_the_selection_is_the_row_readers(pool: asyncpg.Pool) -> None:
    account_id, context, seqs = await _hostile_account(pool)
    other_account, other_campaign = await create_account(pool)
    await insert_referrals(pool, other_account, other_campaign, [{}, {}])
    second = (await create_account(pool))[1]
    await pool.execute("UPDATE campaigns SET account_id = $1 WHERE id = $2", account_id, second)
    await pool.execute("UPDATE referrals SET campaign_id = $1 WHERE seq = ANY($2)", second,
                       seqs[5:12])  # fmt: skip
    first = UUID(next(iter(context.campaign_names)))
    refreshed = await ReferralRowReader(pool).render_context(account_id)
    assert refreshed is not None
    context = refreshed
    base = datetime(2024, 5, 1, tzinfo=UTC)
    for n, seq in enumerate(seqs[:20]):
        await pool.execute(
            "UPDATE referrals SET received_at = $1, opted_in_at = $2 WHERE seq = $3",
            base + timedelta(hours=n),
            base + timedelta(hours=20 - n),
            seq,
        )
    window = (base + timedelta(hours=3), base + timedelta(hours=9))
    selections: list[dict[str, Any]] = [
        {},
        {"after": seqs[2], "through": seqs[9]},
        {"after": seqs[2] - 1, "through": seqs[2]},
        {"after": seqs[-1], "through": seqs[-1] + 100},  # nothing: the header alone
        {"campaigns": [second]},
        {"campaigns": [first, second]},
        {"campaigns": [other_campaign]},  # another account's campaign: nothing
        {"campaigns": []},
        {"frame": TimeFrame(*window)},
        {"frame": TimeFrame(*window, field="opted_in_at")},
        {"frame": TimeFrame(*window), "campaigns": [second], "after": seqs[4]},
    ]
    layout = LayoutSpec(tuple(Column(n, n) for n in ("seq", "first_name", "campaign_name")))
    for selection, fmt in itertools.product(selections, (None, *_formats()[:4])):
        await _assert_same(pool, layout, fmt, context, account_id, **selection)
    empty = await _pg_bytes(pool, layout, None, context, account_id, after=seqs[-1])
    assert empty == b"seq,first_name,campaign_name\r\n"
    no_header = OutputFormat(CsvFormat(header=False))
    assert await _pg_bytes(pool, layout, no_header, context, account_id, after=seqs[-1]) == b""


async def test_many_rows_split_across_chunks_render_the_same(pool: asyncpg.Pool) -> None:
    account_id, campaign_id = await create_account(pool, campaign='c,"1"')
    await pool.execute(
        r"""INSERT INTO referrals (account_id, campaign_id, partner_referral_id, email,
                                   first_name, ad_text, city, opted_in_at)
            SELECT $1, $2, 'r' || g, repeat('\', g % 7) || '@x',
                   CASE g % 4 WHEN 0 THEN '"q' WHEN 1 THEN E'l\nf' WHEN 2 THEN '=f' ELSE '\.' END,
                   repeat(E'a"\\\n\r,', g % 50), CASE WHEN g % 5 = 0 THEN '' ELSE 'c' || g END,
                   timestamptz '2024-01-01 00:00:00+00' + g * interval '1.5 seconds'
              FROM generate_series(1, 30000) g""",
        account_id,
        campaign_id,
    )
    context = await ReferralRowReader(pool).render_context(account_id)
    assert context is not None
    fields = ("seq", "email", "first_name", "ad_text", "opted_in_at", "campaign_name")
    several = LayoutSpec(tuple(Column(n, n) for n in fields))
    for spec in (several, LayoutSpec((Column("f", "first_name"),))):
        for fmt in (None, OutputFormat(CsvFormat(line_ending="\n", quoting=Quoting.ALL))):
            got = await _assert_same(pool, spec, fmt, context, account_id)
            assert len(got) > 1024 * 1024 or len(spec.columns) == 1
    plan = pg_csv_plan(several, None, {})
    assert plan is not None
    chunks = pg_csv_chunks(pool, plan, context, account_id, 0, 10**12, None, None)
    sizes = [len(chunk) async for chunk in chunks]
    assert len(sizes) > 4
    assert set(sizes[:-1]) == {CHUNK_BYTES}


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
        spec = LayoutSpec((Column("a", "ad_text"), Column("e", "email")))
        plan = pg_csv_plan(spec, None, {})
        assert plan is not None
        chunks = pg_csv_chunks(pool, plan, RenderContext(), account_id, 0, 10**12, None, None)
        first = await anext(chunks)
        assert first.startswith(b"a,e\r\n")
        assert len(first) < 20000 * 500
        await chunks.aclose()
        assert await pool.fetchval("SELECT count(*) FROM referrals") == 20000


def test_the_plan_selects_through_the_row_readers_own_query() -> None:
    plan = pg_csv_plan(DEFAULT_LAYOUT, None, {})
    assert plan is not None
    # One source of truth for the selection and each field's text: the query itself.
    assert f"FROM ({QUERIES['referral_rows_in_range']}\n) s," in plan.query
    assert plan.fields == compile_layout(DEFAULT_LAYOUT, {}).row_fields


def test_the_plan_refuses_what_postgresql_cannot_render_identically() -> None:
    custom = {"full": CustomFieldSpec("full", "", (TemplateStep("{first_name}"),))}
    with_custom = LayoutSpec((Column("a", "seq"), Column("b", "full")))
    with_extra = LayoutSpec((Column("a", "seq"), Column("q", "extra.q1")))
    plain = LayoutSpec((Column("a", "seq"), Column("b", "email")))
    refused = [
        (with_custom, None),
        (with_extra, None),
        (LayoutSpec((Column("a", "nonexistent"),)), None),
        (LayoutSpec(()), None),
        (plain, OutputFormat(JsonLinesFormat())),
        (plain, OutputFormat(JsonArrayFormat())),
        (plain, OutputFormat(gzip=True)),
        (plain, OutputFormat(CsvFormat(delimiter="§"))),
        (plain, OutputFormat(CsvFormat(delimiter="\x00"))),
        (plain, OutputFormat(CsvFormat(delimiter=",,"))),
        (plain, OutputFormat(CsvFormat(line_ending="\r"))),
        (LayoutSpec(plain.columns, format=OutputFormat(gzip=True)), None),
    ]
    for spec, fmt in refused:
        assert pg_csv_plan(spec, fmt, custom) is None, (spec, fmt)
    assert pg_csv_plan(plain, None, custom) is not None
    # A standard field wins over a custom field of the same name, as in the compiler.
    shadowing = {"email": CustomFieldSpec("email", "", (TemplateStep("x"),))}
    assert pg_csv_plan(plain, None, shadowing) is not None
