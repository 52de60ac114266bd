"""Streaming render: chunks, laziness, problem accounting, context fields, hostile values."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from services.common.layouts.catalog import ROW_FIELDS
from services.common.layouts.compiler import RenderContext, compile_layout
from services.common.layouts.model import (
    CaseMode,
    CaseStep,
    Column,
    CsvFormat,
    CustomFieldSpec,
    DateKind,
    DateStep,
    DefaultStep,
    HashStep,
    LayoutSpec,
    MapEntry,
    MatchMode,
    OutputFormat,
    PhoneStep,
    TemplateStep,
    TrimStep,
    TruncateStep,
    ValueMapStep,
)
from services.common.layouts.problems import ProblemLog
from services.common.layouts.render import render_bytes, render_objects, render_rows
from services.common.referral_rows import CopyTextParser
from tests.unit.layout_support import referral_row

DOB = CustomFieldSpec(
    "dob", "date_of_birth", (DateStep(output=DateKind.PATTERN, output_pattern="%d.%m.%Y"),)
)
LAYOUT = LayoutSpec((Column("Seq", "seq"), Column("Email", "email"), Column("DOB", "dob")))


def _rows(count: int) -> list[list[str]]:
    return [
        referral_row(
            seq=i,
            email=f"user{i}@example.com",
            date_of_birth="1990-01-02" if i % 1000 else "not a date",
        )
        for i in range(count)
    ]


async def _aiter(rows: list[list[str]], pulled: list[int]) -> AsyncIterator[list[str]]:
    for row in rows:
        pulled[0] += 1
        yield row


async def _collect(chunks: AsyncIterator[bytes]) -> list[bytes]:
    return [chunk async for chunk in chunks]


async def test_streamed_chunks_join_to_the_same_bytes_as_a_one_shot_render() -> None:
    rows = _rows(5000)
    streamed = await _collect(render_rows(compile_layout(LAYOUT, {"dob": DOB}), _aiter(rows, [0])))
    assert len(streamed) > 1
    assert b"".join(streamed) == render_bytes(compile_layout(LAYOUT, {"dob": DOB}), rows)


async def test_rendering_pulls_rows_lazily() -> None:
    rows, pulled = _rows(20_000), [0]
    chunks = render_rows(compile_layout(LAYOUT, {"dob": DOB}), _aiter(rows, pulled))
    first = await anext(chunks)
    assert first.startswith(b"Seq,Email,DOB\r\n")
    assert pulled[0] < len(rows) // 2
    await chunks.aclose()


async def test_streamed_gzip_is_deterministic_and_complete() -> None:
    rows = _rows(3000)
    fmt = OutputFormat(CsvFormat(), gzip=True)

    async def once() -> bytes:
        layout = compile_layout(LAYOUT, {"dob": DOB})
        return b"".join(await _collect(render_rows(layout, _aiter(rows, [0]), fmt)))

    first = await once()
    assert first == await once()
    assert gzip.decompress(first) == render_bytes(compile_layout(LAYOUT, {"dob": DOB}), rows)


async def test_problems_are_counted_across_batches_with_their_row_positions() -> None:
    layout = compile_layout(LAYOUT, {"dob": DOB}, problems=ProblemLog(max_samples=3))
    await _collect(render_rows(layout, _aiter(_rows(5000), [0])))
    summary = layout.problems.summary()
    assert summary.total == 5
    assert summary.counts == {("dob", "INVALID_DATE"): 5}
    assert [(p.row, p.seq, p.value) for p in summary.samples] == [
        (0, "0", "not a date"),
        (1000, "1000", "not a date"),
        (2000, "2000", "not a date"),
    ]
    assert layout.rows_done == 5000


def test_context_fields_come_from_the_render_context() -> None:
    spec = LayoutSpec(
        (
            Column("Campaign", "campaign_name"),
            Column("Partner", "partner_name"),
            Column("Delivery", "delivery_id"),
            Column("Sent", "delivery_time"),
            Column("Received", "received_at"),
        )
    )
    context = RenderContext(
        campaign_names={"00000000-0000-0000-0000-00000000000c": "Spring offer"},
        partner_names={"p1": "Partner One"},
        delivery_id="d-42",
        delivery_time=datetime(2024, 7, 2, 8, 0, 0, 999, tzinfo=UTC),
    )
    rows = [referral_row(partner_id="p1"), referral_row(partner_id="p2", campaign_id="x")]
    assert compile_layout(spec, {}, context).cells(rows) == [
        ("Spring offer", "Partner One", "d-42", "2024-07-02T08:00:00Z", "2024-07-01T12:30:00Z"),
        ("", "p2", "d-42", "2024-07-02T08:00:00Z", "2024-07-01T12:30:00Z"),
    ]


def test_extra_values_that_are_not_strings_render_as_json() -> None:
    spec = LayoutSpec((Column("n", "extra.n"), Column("all", "extra")))
    row = referral_row()
    row[ROW_FIELDS.index("extra")] = '{"n": 5, "list": [1]}'
    assert compile_layout(spec, {}).cells([row]) == [("5", '{"n": 5, "list": [1]}')]


def test_rows_of_the_wrong_width_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match=f"{len(ROW_FIELDS)} fields"):
        compile_layout(LAYOUT, {"dob": DOB}).cells([["1", "2"]])


HOSTILE = [
    "", " ", "\x00", "\u202e", "🙂" * 50, "9" * 400, "-1e309", "nan", "inf", "0",
    "9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00", "\ud7ff", "a\r\nb",
    "=1+1", "{}", "{value}", "%Y", "ǅ", "İ",
]  # fmt: skip


@pytest.mark.parametrize("value", HOSTILE)
def test_no_value_makes_any_step_crash(value: str) -> None:
    steps = (
        ValueMapStep((MapEntry("a", "b"),), match_mode=MatchMode.CONTAINS, case_insensitive=True),
        TrimStep(collapse_spaces=True),
        CaseStep(CaseMode.TITLE),
        TruncateStep(5),
        DefaultStep("x"),
    )
    customs = {
        "chain": CustomFieldSpec("chain", "city", steps),
        "iso": CustomFieldSpec("iso", "city", (DateStep(output_time_zone="Asia/Tokyo"),)),
        "epoch": CustomFieldSpec("epoch", "city", (DateStep(input=DateKind.UNIX_SECONDS),)),
        "serial": CustomFieldSpec(
            "serial",
            "city",
            (DateStep(input=DateKind.SPREADSHEET_SERIAL, output=DateKind.SPREADSHEET_SERIAL),),
        ),
        "phone": CustomFieldSpec("phone", "city", (PhoneStep("US"),)),
        "hash": CustomFieldSpec("hash", "city", (HashStep(),)),
        "joined": CustomFieldSpec("joined", "city", (TemplateStep("{value}/{chain}"),)),
    }
    spec = LayoutSpec(tuple(Column(name, name) for name in customs))
    layout = compile_layout(spec, customs)
    (cells,) = layout.cells([referral_row(city=value)])
    assert len(cells) == len(customs)
    assert render_bytes(layout, [referral_row(city=value)])


def test_copy_text_parser_handles_escapes_and_split_chunks() -> None:
    width = 3
    records = "1\tplain\t\\N\n2\ttab\\there\tline\\nbreak \\\\ slash\n3\tzoë\t東京\n"
    data = records.encode()
    parser = CopyTextParser(width)
    batches = [parser.feed(data[i : i + 7]) for i in range(0, len(data), 7)]
    batches.append(parser.feed(b"", final=True))
    rows = [row for batch in batches if batch for row in zip(*batch, strict=True)]
    assert rows == [
        ("1", "plain", ""),
        ("2", "tab\there", "line\nbreak \\ slash"),
        ("3", "zoë", "東京"),
    ]


def test_copy_text_parser_refuses_truncated_or_misshapen_records() -> None:
    with pytest.raises(ValueError, match="ended inside"):
        CopyTextParser(2).feed(b"1\ta\n2\t", final=True)
    with pytest.raises(ValueError, match="2 fields"):
        CopyTextParser(2).feed(b"1\ta\tb\n")


def test_objects_for_api_bodies_are_keyed_by_header() -> None:
    layout = compile_layout(LAYOUT, {"dob": DOB})
    rows = [referral_row(seq=7, date_of_birth="1990-01-02"), referral_row(seq=8)]
    assert render_objects(layout, rows, empty_as_null=True) == [
        {"Seq": "7", "Email": "jo@example.com", "DOB": "02.01.1990"},
        {"Seq": "8", "Email": "jo@example.com", "DOB": None},
    ]


def test_a_layout_reports_the_row_fields_it_reads() -> None:
    spec = LayoutSpec((Column("when", "dob"), Column("c", "campaign_name"), Column("q", "extra.q")))
    assert compile_layout(spec, {"dob": DOB}).row_fields == (
        "seq", "campaign_id", "date_of_birth", "extra",
    )  # fmt: skip
