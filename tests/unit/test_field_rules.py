"""The rule data is one table (validation.FIELD_RULES) that every validator reads."""

from __future__ import annotations

import re
from pathlib import Path

from services.common.referral_shape import COLUMNS_BY_NAME
from services.ingest import native
from services.ingest.model import REFERRAL_COLUMNS
from services.ingest.validation import FIELD_RULES, Rule, rule_of

SCANNER = Path(__file__).resolve().parents[2] / "services" / "ingest" / "_scan.c"


def test_the_scanners_rule_codes_are_the_rules_in_the_order_of_its_enum() -> None:
    enum_block = SCANNER.read_text().split("enum {", 1)[1].split("};", 1)[0]
    codes = re.findall(r"^\s*R_([A-Z_]+)\s*(?:=\s*\d+\s*)?,", enum_block, re.MULTILINE)

    assert codes == [rule.name for rule in native.C_RULES]
    assert set(native.C_RULES) == set(Rule)


def test_every_ruled_field_is_a_column_of_the_shape() -> None:
    assert sorted(set(FIELD_RULES) - set(COLUMNS_BY_NAME)) == []


def test_the_scanner_takes_each_columns_rule_from_the_table() -> None:
    for name, (_, _, code, _, _) in zip(REFERRAL_COLUMNS, native.scanner_columns(), strict=True):
        assert native.C_RULES[code] is rule_of(name), name
