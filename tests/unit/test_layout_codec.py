"""Stored (jsonb) form of definitions, the catalog and the default layout."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest

from services.common.layouts.catalog import (
    CONTEXT_FIELDS,
    ROW_FIELDS,
    STANDARD_FIELDS,
    extra_key,
    iso_timestamp,
    pg_timestamp,
    row_from_values,
)
from services.common.layouts.codec import (
    CodecError,
    custom_field_from_json,
    custom_field_to_json,
    layout_from_json,
    layout_to_json,
    step_from_json,
)
from services.common.layouts.defaults import DEFAULT_LAYOUT
from services.common.layouts.model import (
    CaseMode,
    CaseStep,
    Column,
    ConstantStep,
    CsvFormat,
    CustomFieldSpec,
    DateKind,
    DateStep,
    DefaultStep,
    FormulaGuard,
    HashAlgorithm,
    HashStep,
    JsonArrayFormat,
    JsonLinesFormat,
    LayoutSpec,
    MapEntry,
    MatchMode,
    OutputFormat,
    PhoneFormat,
    PhoneStep,
    Quoting,
    TemplateStep,
    TrimStep,
    TruncateStep,
    ValueMapStep,
)
from services.common.layouts.validation import layout_problems

EVERY_STEP = (
    ValueMapStep((MapEntry("M", "Male"),), MatchMode.CONTAINS, True, "?", None),
    DateStep(DateKind.PATTERN, "%d/%m/%Y", "Europe/Paris", DateKind.UNIX_SECONDS, "", "", "n/a"),
    TemplateStep("{first_name}"),
    CaseStep(CaseMode.TITLE),
    TrimStep(collapse_spaces=True),
    TruncateStep(10),
    ConstantStep("c"),
    DefaultStep("d"),
    HashStep(HashAlgorithm.MD5, normalize=False),
    PhoneStep("GB", "country", PhoneFormat.NATIONAL, True, ""),
)


def test_custom_fields_survive_a_round_trip_through_json() -> None:
    spec = CustomFieldSpec("everything", "email", EVERY_STEP, "all the steps")
    stored = json.loads(json.dumps(custom_field_to_json(spec)))
    assert custom_field_from_json("everything", "all the steps", stored) == spec


@pytest.mark.parametrize(
    "fmt",
    [
        OutputFormat(CsvFormat(";", Quoting.ALL, False, "\n", True), gzip=True),
        OutputFormat(JsonLinesFormat(empty_as_null=True)),
        OutputFormat(JsonArrayFormat()),
    ],
)
def test_layouts_survive_a_round_trip_through_json(fmt: OutputFormat) -> None:
    spec = LayoutSpec((Column("E-mail", "email"), Column("Q", "extra.q")), FormulaGuard.OFF, fmt)
    assert layout_from_json(json.loads(json.dumps(layout_to_json(spec)))) == spec


def test_unknown_step_types_are_refused() -> None:
    with pytest.raises(CodecError, match="unknown step type"):
        step_from_json({"type": "python", "code": "import os"})


def test_catalog_lists_every_referral_column_then_context_with_descriptions() -> None:
    assert ROW_FIELDS[0] == "seq"
    assert len(ROW_FIELDS) == len(STANDARD_FIELDS) > 28  # every column of the shape
    names = [f.name for f in CONTEXT_FIELDS]
    assert names == ["campaign_name", "partner_name", "delivery_id", "delivery_time"]
    assert all(f.description for f in STANDARD_FIELDS + CONTEXT_FIELDS)


def test_extra_keys() -> None:
    assert extra_key("extra.q1") == "q1"
    assert extra_key("extra.") is None
    assert extra_key("email") is None


def test_timestamp_text_forms() -> None:
    at = datetime(2024, 7, 1, 12, 30, 5, 250000, tzinfo=UTC)
    assert pg_timestamp(at) == "2024-07-01 12:30:05.25+00"
    assert iso_timestamp(pg_timestamp(at)) == "2024-07-01T12:30:05Z"
    row = row_from_values({"opted_in_at": at, "date_of_birth": date(1990, 5, 17), "seq": 7})
    assert (row[0], row[ROW_FIELDS.index("date_of_birth")]) == ("7", "1990-05-17")


def test_timestamps_before_year_1000_keep_four_year_digits_as_postgresql_writes_them() -> None:
    assert pg_timestamp(datetime(5, 3, 1, 7, 8, 9, tzinfo=UTC)) == "0005-03-01 07:08:09+00"
    assert iso_timestamp(pg_timestamp(datetime(1, 1, 1, tzinfo=UTC))) == "0001-01-01T00:00:00Z"


def test_the_default_layout_is_valid_and_starts_with_the_consumer() -> None:
    assert layout_problems(DEFAULT_LAYOUT, set()) == []
    assert [c.field for c in DEFAULT_LAYOUT.columns[:4]] == [
        "email", "title", "first_name", "last_name",
    ]  # fmt: skip
