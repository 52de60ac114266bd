"""One control-character rule for every text that is stored or shown."""

from __future__ import annotations

import pytest

from services.common.control_characters import has_control_character
from services.common.errors import InvalidArgumentError
from services.common.layouts.model import Column, LayoutSpec
from services.common.layouts.validation import layout_problems
from services.ingest.accounts import check_name

CONTROLS = [chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))]
LINE_BREAKS = ["\t", "\n", "\r"]


def test_the_rule_refuses_c0_c1_and_del_and_allows_line_breaks_only_in_multi_line_text() -> None:
    everything = [chr(c) for c in range(0x250)]

    assert [ch for ch in everything if has_control_character(ch)] == CONTROLS
    allowed = [ch for ch in CONTROLS if not has_control_character(ch, multiline=True)]
    assert allowed == LINE_BREAKS


@pytest.mark.parametrize("control", ["\x00", "\x1f", "\x7f", "\x85", "\x9f"])
def test_account_names_and_layout_headers_follow_the_rule(control: str) -> None:
    with pytest.raises(InvalidArgumentError):
        check_name(f"Ac{control}me")
    spec = LayoutSpec((Column(f"E{control}mail", "email"),))
    assert [p.code for p in layout_problems(spec, frozenset())] == ["CONTROL_CHARACTER"]
