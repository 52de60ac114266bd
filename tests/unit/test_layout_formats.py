"""Golden files: exact bytes of every CSV option, the formula guard, JSON Lines and JSON.

Regenerate after an intended change with HANDOFF_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from services.common.layouts.compiler import compile_layout
from services.common.layouts.formats import (
    file_extension,
    json_object,
    media_type,
    neutralise_formula,
)
from services.common.layouts.model import (
    Column,
    CsvFormat,
    FormulaGuard,
    JsonArrayFormat,
    JsonLinesFormat,
    LayoutSpec,
    OutputFormat,
    Quoting,
)
from services.common.layouts.render import render_bytes
from tests.unit.layout_support import referral_row

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("HANDOFF_UPDATE_GOLDEN") == "1"

COLUMNS = (
    Column("Seq", "seq"),
    Column("First name", "first_name"),
    Column("Last name", "last_name"),
    Column("City", "city"),
    Column("Note", "extra.note"),
    Column("Amount", "extra.amount"),
)

# (first_name, last_name, city, note, amount): quoting, formula triggers, non-ASCII, empties.
VALUES = [
    ("Jo", "O'Neil, Jr.", "Zürich", 'He said "hi"', "-12.50"),
    ('=HYPERLINK("http://x")', "+cmd|' /C calc'!A0", "@SUM(A1)", "line1\nline2", "+447911123456"),
    ("\tTabbed", "\rCarriage", " Lead space", "a\rb", "-"),
    ("", "", "", "", ""),
    ("Zoë", "Ørsted", "東京", "semi;colon", "1e3"),
]
ROWS = [
    referral_row(
        seq=i + 1,
        first_name=first,
        last_name=last,
        city=city,
        extra={"note": note, "amount": amount} if note or amount else {},
    )
    for i, (first, last, city, note, amount) in enumerate(VALUES)
]


def _render(fmt: OutputFormat, guard: FormulaGuard = FormulaGuard.STRICT) -> bytes:
    layout = compile_layout(LayoutSpec(COLUMNS, formula_guard=guard, format=fmt), {})
    return render_bytes(layout, ROWS)


def _check(name: str, output: bytes) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_bytes(output)
    assert output == path.read_bytes(), f"{name} differs from its golden file"


@pytest.mark.parametrize(
    ("name", "fmt", "guard"),
    [
        ("csv_default.csv", CsvFormat(), FormulaGuard.STRICT),
        (
            "csv_semicolon_lf_bom.csv",
            CsvFormat(delimiter=";", line_ending="\n", byte_order_mark=True),
            FormulaGuard.STRICT,
        ),
        (
            "csv_quote_all_no_header.csv",
            CsvFormat(quoting=Quoting.ALL, header=False),
            FormulaGuard.STRICT,
        ),
        ("csv_tab_lf.csv", CsvFormat(delimiter="\t", line_ending="\n"), FormulaGuard.STRICT),
        ("csv_guard_allow_numbers.csv", CsvFormat(), FormulaGuard.ALLOW_NUMBERS),
        ("csv_guard_off.csv", CsvFormat(), FormulaGuard.OFF),
    ],
)
def test_csv_matches_golden_file(name: str, fmt: CsvFormat, guard: FormulaGuard) -> None:
    _check(name, _render(OutputFormat(fmt), guard))


def test_json_lines_and_json_match_golden_files() -> None:
    _check("rows.jsonl", _render(OutputFormat(JsonLinesFormat())))
    _check("rows_empty_as_null.jsonl", _render(OutputFormat(JsonLinesFormat(empty_as_null=True))))
    _check("rows.json", _render(OutputFormat(JsonArrayFormat())))


def test_json_outputs_parse_back_to_the_cells() -> None:
    lines = _render(OutputFormat(JsonLinesFormat())).decode().splitlines()
    objects = [json.loads(line) for line in lines]
    assert objects[1]["First name"] == '=HYPERLINK("http://x")'  # no guard outside CSV
    assert objects[2]["Note"] == "a\rb"
    assert json.loads(_render(OutputFormat(JsonArrayFormat()))) == objects


def test_json_array_of_no_rows_is_an_empty_array() -> None:
    layout = compile_layout(LayoutSpec(COLUMNS, format=OutputFormat(JsonArrayFormat())), {})
    assert render_bytes(layout, []) == b"[]\n"


def test_csv_with_no_rows_is_just_the_header() -> None:
    layout = compile_layout(LayoutSpec(COLUMNS), {})
    assert render_bytes(layout, []) == b"Seq,First name,Last name,City,Note,Amount\r\n"


def test_formula_guard_applies_to_headers_too() -> None:
    layout = compile_layout(LayoutSpec((Column("=1+1", "seq"),)), {})
    assert render_bytes(layout, []) == b"'=1+1\r\n"


@pytest.mark.parametrize(
    ("cell", "guarded"),
    [
        ("-1", "-1"),
        ("+1.5e3", "+1.5e3"),
        ("-.5", "-.5"),
        ("-1e", "'-1e"),
        ("-1\n", "'-1\n"),
        ("-\u0663", "'-\u0663"),  # ARABIC-INDIC DIGIT THREE: text to a spreadsheet
        ("+\uff11", "'+\uff11"),  # FULLWIDTH DIGIT ONE
    ],
)
def test_allow_numbers_keeps_only_plain_ascii_numbers(cell: str, guarded: str) -> None:
    assert neutralise_formula(cell, FormulaGuard.ALLOW_NUMBERS) == guarded


def test_single_column_keeps_empty_cells_as_quoted_empty_strings() -> None:
    layout = compile_layout(LayoutSpec((Column("City", "city"),)), {})
    assert render_bytes(layout, [referral_row(city="")]) == b'City\r\n""\r\n'


def test_gzip_output_is_deterministic_and_decompresses_to_the_csv() -> None:
    plain = _render(OutputFormat(CsvFormat()))
    first = _render(OutputFormat(CsvFormat(), gzip=True))
    assert first == _render(OutputFormat(CsvFormat(), gzip=True))
    assert first[:2] == b"\x1f\x8b"
    assert first[4:8] == b"\0\0\0\0"  # no modification time in the header
    assert gzip.decompress(first) == plain


def test_json_object_for_api_bodies() -> None:
    assert json_object(("a", "b"), ("1", "")) == {"a": "1", "b": ""}
    assert json_object(("a", "b"), ("1", ""), empty_as_null=True) == {"a": "1", "b": None}


def test_media_types_and_extensions() -> None:
    assert media_type(OutputFormat()) == "text/csv; charset=utf-8"
    assert file_extension(OutputFormat(JsonLinesFormat(), gzip=True)) == ".jsonl.gz"
    assert file_extension(OutputFormat(JsonArrayFormat())) == ".json"
